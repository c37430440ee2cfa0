// crosstown/crosstown.hpp - everything an application needs, in one include.
//
// crosstown runs work after an HTTP response has gone out over the wire - only when the
// response's status allows it, in registration order, exactly once, on the executor of your
// choice - and lets tests prove it. Start with response_scope.hpp and defer_options.hpp.
#pragma once

#include <crosstown/asio_executor.hpp>
#include <crosstown/awaitable_task.hpp>
#include <crosstown/binding.hpp>
#include <crosstown/defer_options.hpp>
#include <crosstown/executor.hpp>
#include <crosstown/inline_executor.hpp>
#include <crosstown/job.hpp>
#include <crosstown/lane.hpp>
#include <crosstown/manual_executor.hpp>
#include <crosstown/metrics.hpp>
#include <crosstown/response_scope.hpp>
#include <crosstown/retry.hpp>
#include <crosstown/runtime.hpp>
#include <crosstown/status_set.hpp>
#include <crosstown/task.hpp>
#include <crosstown/thread_pool.hpp>
