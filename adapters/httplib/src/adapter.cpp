// The cpp-httplib adapter (crosstown/httplib/adapter.hpp).
//
// Per connection thread: the connection's scope (set by the task-queue wrapper) and the
// current request's state (set by pre-routing, handed to the body's content provider at
// post-routing, released by the provider's releaser or, for unverified responses, by the
// logger). All of it is touched only by the connection's thread; the counters are atomics.
#include <crosstown/httplib/adapter.hpp>

#include <algorithm>
#include <cctype>
#include <exception>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>

namespace crosstown::httplib {

struct adapter::state {
  explicit state(runtime& r, adapter_options o) : rt(r), options(std::move(o)) {}

  runtime& rt;
  const adapter_options options;
  chained_hooks user;  // written by install(), before the server listens

  std::atomic<std::uint64_t> sent{0};
  std::atomic<std::uint64_t> failed{0};
  std::atomic<std::uint64_t> unverified{0};
  std::atomic<std::uint64_t> unverified_head{0};
  std::atomic<std::uint64_t> unverified_range{0};
  std::atomic<std::uint64_t> unverified_empty{0};
  std::atomic<std::uint64_t> unverified_compressed{0};
  std::atomic<std::uint64_t> untracked{0};
  std::atomic<std::uint64_t> hook_errors{0};

  void count(std::atomic<std::uint64_t>& counter) noexcept {
    counter.fetch_add(1, std::memory_order_relaxed);
  }
};

namespace {

// Why a response is reported sent without proof.
enum class unverified_cause : std::uint8_t { head, range, empty, compressed };

// One request, from pre-routing to its outcome. Used on the connection's thread only.
struct request_state {
  request_state(std::shared_ptr<adapter::state> o, std::shared_ptr<connection_scope> c,
                const hl::Request& r)
      : owner(std::move(o)), connection(std::move(c)), req(&r) {
    if (connection) {
      scope.emplace(*connection);
    } else {
      scope.emplace(owner->rt);
    }
  }
  request_state(const request_state&) = delete;
  request_state& operator=(const request_state&) = delete;
  ~request_state() { scope.reset(); }  // scope ended, then the connection reference goes

  void headers_out() noexcept {
    if (headers_reported) return;
    headers_reported = true;
    try {
      scope->headers_sent();
    } catch (...) {
      owner->count(owner->hook_errors);
    }
  }

  // The provider's releaser, or the logger for an unverified response.
  void finish(bool delivered, const char* reason) noexcept {
    if (finished) return;
    finished = true;
    try {
      if (delivered) {
        scope->response_sent();
      } else {
        scope->delivery_failed(reason);
      }
    } catch (...) {
      owner->count(owner->hook_errors);
    }
    if (owner->options.on_outcome) {
      try {
        owner->options.on_outcome(*req, *scope);
      } catch (...) {
        owner->count(owner->hook_errors);
      }
    }
  }

  std::shared_ptr<adapter::state> owner;
  std::shared_ptr<connection_scope> connection;  // declared before scope: outlives it
  std::optional<response_scope> scope;
  const hl::Request* req;
  std::optional<unverified_cause> unverified;  // set at post-routing
  bool headers_reported = false;
  bool finished = false;
};

// What the task-queue wrapper gives each connection's thread.
struct connection_context {
  std::shared_ptr<adapter::state> owner;
  std::shared_ptr<connection_scope> connection;
};

thread_local connection_context* tls_connection = nullptr;
thread_local std::shared_ptr<request_state> tls_current;

// The request state of `req` on this thread, or null.
std::shared_ptr<request_state> current_for(const hl::Request& req) {
  if (tls_current && tls_current->req == &req) return tls_current;
  return nullptr;
}

void release_current(const request_state* s) noexcept {
  if (tls_current.get() == s) tls_current.reset();
}

// Wraps the server's task queue: each enqueued function serves one connection; around it,
// the connection's scope is created and closed on that thread.
class tracking_queue final : public hl::TaskQueue {
 public:
  tracking_queue(hl::TaskQueue* inner, std::shared_ptr<adapter::state> owner)
      : inner_(inner), owner_(std::move(owner)) {}

  void enqueue(std::function<void()> fn) override {
    inner_->enqueue([owner = owner_, fn = std::move(fn)] {
      std::shared_ptr<connection_scope> connection;
      try {
        connection = std::make_shared<connection_scope>(owner->rt);
      } catch (...) {
        owner->count(owner->hook_errors);  // the connection is served untracked
      }
      connection_context context{owner, connection};
      tls_connection = connection ? &context : nullptr;
      struct restore {
        ~restore() {
          tls_connection = nullptr;
          tls_current.reset();  // a request whose outcome never came: its scope ends here
        }
      } restore_on_exit;
      fn();
      tls_current.reset();
      if (connection) connection->closed();
    });
  }
  void shutdown() override { inner_->shutdown(); }
  void on_idle() override { inner_->on_idle(); }

 private:
  std::unique_ptr<hl::TaskQueue> inner_;
  std::shared_ptr<adapter::state> owner_;
};

bool contains_token(std::string_view list, std::string_view token) {
  std::string lower(list);
  std::transform(lower.begin(), lower.end(), lower.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return lower.find(token) != std::string::npos;
}

// Whether cpp-httplib would compress this body (it compresses `res.body`, never a content
// provider): moving it into a provider would change the bytes on the wire.
bool may_be_compressed(const hl::Request& req, const hl::Response& res) {
  const std::string accepted = req.get_header_value("Accept-Encoding");
  if (accepted.empty()) return false;
  if (!contains_token(accepted, "gzip") && !contains_token(accepted, "br")) return false;
  const std::string type = res.get_header_value("Content-Type");
  return type.rfind("text/", 0) == 0 || contains_token(type, "json") ||
         contains_token(type, "xml") || contains_token(type, "javascript") ||
         contains_token(type, "svg");
}

// Routes the provider's writes through a sink that reports the headers once the first byte
// after them was accepted (so the header was: cpp-httplib ignores the header write's result),
// and its releaser to finish. The first write is split after its first byte: invisible on the
// wire for a body of known length; for a chunked provider, its first chunk goes out as two.
void wrap_provider(hl::Response& res, const std::shared_ptr<request_state>& s) {
  hl::ContentProvider inner = std::move(res.content_provider_);
  res.content_provider_ = [s, inner = std::move(inner)](std::size_t offset, std::size_t length,
                                                        hl::DataSink& sink) {
    hl::DataSink proxy;
    proxy.write = [&sink, &s](const char* data, std::size_t size) {
      if (!s->headers_reported && size > 1) {
        // One byte first: once it is accepted, so was the header before it, and the
        // headers-phase tasks need not wait for a large first write.
        if (!sink.write(data, 1)) return false;
        s->headers_out();
        ++data;
        --size;
      }
      const bool ok = sink.write(data, size);
      if (ok) s->headers_out();
      return ok;
    };
    proxy.done = [&sink] { sink.done(); };
    proxy.is_writable = [&sink] { return sink.is_writable(); };
    return inner(offset, length, proxy);
  };
  hl::ContentProviderResourceReleaser user = std::move(res.content_provider_resource_releaser_);
  res.content_provider_resource_releaser_ = [s, user = std::move(user)](bool success) {
    s->finish(success, "cpp-httplib: the response body was not written completely");
    if (success) {
      s->owner->count(s->owner->sent);
    } else {
      s->owner->count(s->owner->failed);
    }
    release_current(s.get());
    if (user) {
      try {
        user(success);
      } catch (...) {
        s->owner->count(s->owner->hook_errors);
      }
    }
  };
}

void pre_routing(const std::shared_ptr<adapter::state>& owner, const hl::Request& req) {
  tls_current.reset();  // a previous request left without an outcome ends now
  std::shared_ptr<connection_scope> connection;
  if (tls_connection != nullptr && tls_connection->owner == owner) {
    connection = tls_connection->connection;
  } else {
    owner->count(owner->untracked);
  }
  tls_current = std::make_shared<request_state>(owner, std::move(connection), req);
}

void post_routing(const hl::Request& req, hl::Response& res) {
  const std::shared_ptr<request_state> s = current_for(req);
  if (!s) return;
  s->scope->status_known(res.status);
  if (req.method == "HEAD") {
    s->unverified = unverified_cause::head;
  } else if (!req.ranges.empty() || req.has_header("Range")) {
    s->unverified = unverified_cause::range;
  } else if (res.content_provider_) {
    wrap_provider(res, s);
  } else if (res.body.empty()) {
    s->unverified = unverified_cause::empty;
  } else if (may_be_compressed(req, res)) {
    s->unverified = unverified_cause::compressed;
  } else {
    // The same bytes, written by a provider whose releaser says whether they all went out.
    auto body = std::make_shared<std::string>(std::move(res.body));
    res.body.clear();
    const std::string type = res.get_header_value("Content-Type");
    res.headers.erase("Content-Type");
    const std::size_t size = body->size();
    res.set_content_provider(
        size, type,
        [body](std::size_t offset, std::size_t length, hl::DataSink& sink) {
          return sink.write(body->data() + offset, std::min(length, body->size() - offset));
        },
        nullptr);
    if (type.empty()) res.headers.erase("Content-Type");
    wrap_provider(res, s);
  }
}

void logged(const hl::Request& req) {
  const std::shared_ptr<request_state> s = current_for(req);
  if (!s || !s->unverified) return;  // a provider's releaser reports (or nothing to report)
  adapter::state& owner = *s->owner;
  owner.count(owner.unverified);
  switch (*s->unverified) {
    case unverified_cause::head: owner.count(owner.unverified_head); break;
    case unverified_cause::range: owner.count(owner.unverified_range); break;
    case unverified_cause::empty: owner.count(owner.unverified_empty); break;
    case unverified_cause::compressed: owner.count(owner.unverified_compressed); break;
  }
  s->finish(true, "");
  release_current(s.get());
}

}  // namespace

adapter::adapter(runtime& rt, adapter_options options)
    : rt_(rt), state_(std::make_shared<state>(rt, std::move(options))) {}

adapter::~adapter() = default;

void adapter::install(hl::Server& server, chained_hooks user) {
  state_->user = std::move(user);
  std::shared_ptr<state> st = state_;
  server.set_pre_routing_handler([st](const hl::Request& req, hl::Response& res) {
    try {
      pre_routing(st, req);
    } catch (...) {
      st->count(st->hook_errors);
    }
    if (st->user.pre_routing) {
      try {
        return st->user.pre_routing(req, res);
      } catch (...) {
        st->count(st->hook_errors);
      }
    }
    return hl::Server::HandlerResponse::Unhandled;
  });
  server.set_post_routing_handler([st](const hl::Request& req, hl::Response& res) {
    if (st->user.post_routing) {
      try {
        st->user.post_routing(req, res);
      } catch (...) {
        st->count(st->hook_errors);
      }
    }
    try {
      post_routing(req, res);
    } catch (...) {
      st->count(st->hook_errors);
    }
  });
  server.set_logger([st](const hl::Request& req, const hl::Response& res) {
    logged(req);
    if (st->user.logger) {
      try {
        st->user.logger(req, res);
      } catch (...) {
        st->count(st->hook_errors);
      }
    }
  });
  auto make_inner = std::move(server.new_task_queue);
  server.new_task_queue = [st, make_inner = std::move(make_inner)]() -> hl::TaskQueue* {
    return new tracking_queue(make_inner(), st);
  };
}

response_scope& adapter::scope(const hl::Request& req) {
  const std::shared_ptr<request_state> s = current_for(req);
  if (!s) {
    throw std::logic_error(
        "crosstown::httplib::adapter::scope: no crosstown scope for this request on this "
        "thread (is the adapter installed on the server, and is this the connection's "
        "thread?)");
  }
  return *s->scope;
}

adapter_counters adapter::counters() const noexcept {
  adapter_counters c;
  c.responses_sent = state_->sent.load(std::memory_order_relaxed);
  c.delivery_failed = state_->failed.load(std::memory_order_relaxed);
  c.unverified = state_->unverified.load(std::memory_order_relaxed);
  c.unverified_head = state_->unverified_head.load(std::memory_order_relaxed);
  c.unverified_range = state_->unverified_range.load(std::memory_order_relaxed);
  c.unverified_empty = state_->unverified_empty.load(std::memory_order_relaxed);
  c.unverified_compressed = state_->unverified_compressed.load(std::memory_order_relaxed);
  c.untracked = state_->untracked.load(std::memory_order_relaxed);
  c.hook_errors = state_->hook_errors.load(std::memory_order_relaxed);
  return c;
}

}  // namespace crosstown::httplib
