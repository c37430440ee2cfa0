// crosstown/sim/discard_body.hpp - a Beast body that counts what it is given and keeps nothing.
//
// For the parsers of a simulated run that need a response's framing (status, header, where
// the message ends) but not its bytes: the app oracle's parser of everything the server
// writes, and a client script that checks statuses. `value_type::size` is the body's length.
// Keeping bodies instead costs a copy of each; for a large body, its allocation and release
// per response also make the allocator trim and regrow the heap, which dominated demo runs.
//
//     http::response_parser<crosstown::sim::discard_body> parser;
#pragma once

#include <boost/asio/buffer.hpp>
#include <boost/optional/optional.hpp>
#include <boost/system/error_code.hpp>

#include <cstddef>
#include <cstdint>

namespace crosstown::sim {

struct discard_body {
  struct value_type {
    std::uint64_t size = 0;  ///< bytes of body seen
  };

  /// The BodyReader of Beast's Body concept.
  class reader {
   public:
    template <class Header>
    reader(Header&, value_type& body) noexcept : body_(body) {}
    void init(const boost::optional<std::uint64_t>&, boost::system::error_code& ec) noexcept {
      ec = {};
    }
    template <class ConstBufferSequence>
    std::size_t put(const ConstBufferSequence& buffers, boost::system::error_code& ec) {
      ec = {};
      const std::size_t n = boost::asio::buffer_size(buffers);
      body_.size += n;
      return n;
    }
    void finish(boost::system::error_code& ec) noexcept { ec = {}; }

   private:
    value_type& body_;
  };
};

}  // namespace crosstown::sim
