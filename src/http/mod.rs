//! Our HTTP/1.1: the only place that parses or frames HTTP. `codec` reads and
//! writes heads, `body` reads and writes bodies over a buffered `Wire`,
//! `message` holds the plain values everything else works on, and `path`
//! turns a request path into its canonical routing key.

pub mod body;
pub mod codec;
pub mod message;
pub mod path;
pub mod stream;
pub mod tls;

pub use body::{BodyReader, ChunkedWriter, Wire, copy_body, copy_sides};
pub use codec::{HeadError, Limits};
pub use message::{Body, BodySource, Framing, Headers, Request, Response, Upgraded, Version};
pub use stream::Stream;
