//! Identity supplied by a host application.
//!
//! Standalone, tally decides who a socket belongs to from the handshake's
//! `auth` object (a tally token, or in open mode a bare username; see
//! [`crate::auth`]). An application that embeds tally usually has its own
//! sign-in already — a session cookie, a header set by its gateway, its own
//! JWT — and wants tally's users to be its users. It installs an
//! [`IdentityProvider`] with [`crate::TallyBuilder::identity`]; tally then
//! asks it, once per Socket.IO handshake, instead of reading tokens.
//!
//! The provider sees the handshake's HTTP request (headers, URI) and its
//! `auth` object, and answers with a user, with anonymous, or with a refusal
//! whose message the client receives in `connect_error`. A refused client
//! never joins the namespace, so nothing it sends is counted.

use std::future::Future;
use std::pin::Pin;

use axum::http::{HeaderMap, Uri};
use serde_json::Value;

use crate::user::Username;

/// What a provider sees of one Socket.IO handshake.
#[derive(Debug, Clone)]
pub struct HandshakeRequest {
    /// The headers of the request that opened the connection: cookies, a
    /// gateway's identity header, `Authorization`, …
    pub headers: HeaderMap,
    /// The request URI, with the query string the client sent.
    pub uri: Uri,
    /// The handshake's `auth` object, if the client sent one.
    pub auth: Option<Value>,
}

impl HandshakeRequest {
    /// The value of cookie `name`, if the request carries it.
    pub fn cookie(&self, name: &str) -> Option<&str> {
        cookie(&self.headers, name)
    }
}

/// The value of cookie `name` in a request's `Cookie` headers, if present.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value)
}

/// A handshake the provider refuses: [`Refusal::new`] with a message the
/// client receives as the `connect_error` message (code `host_refused`), so
/// keep it short and free of internals.
pub use crate::refusal::Refusal;

/// Turns a host's session into a tally user during the Socket.IO handshake.
///
/// `Ok(Some(user))` identifies the socket as `user` (its clicks count for
/// that user, it receives `me`), `Ok(None)` lets it in anonymously, and
/// `Err(refusal)` refuses the connection. Any `Fn(HandshakeRequest) ->
/// impl Future<Output = Result<Option<Username>, Refusal>>` closure is a
/// provider, so most hosts never name this trait:
///
/// ```
/// use tally::identity::{HandshakeRequest, Refusal};
/// use tally::user::Username;
///
/// let provider = |request: HandshakeRequest| async move {
///     match request.headers.get("x-user").and_then(|v| v.to_str().ok()) {
///         Some(name) => Username::parse(name)
///             .map(Some)
///             .map_err(|_| Refusal::new("invalid username")),
///         None => Err(Refusal::new("not signed in")),
///     }
/// };
/// # fn takes(_: impl tally::identity::IdentityProvider) {}
/// # takes(provider);
/// ```
///
/// Sockets identified this way have no tally token, so they are not
/// disconnected on a token's expiry and `refresh` answers `no_session`;
/// ending a host session does not close its open sockets.
pub trait IdentityProvider: Send + Sync + 'static {
    /// Decides who the handshake belongs to.
    fn identify(
        &self,
        request: HandshakeRequest,
    ) -> impl Future<Output = Result<Option<Username>, Refusal>> + Send;
}

impl<F, Fut> IdentityProvider for F
where
    F: Fn(HandshakeRequest) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Option<Username>, Refusal>> + Send,
{
    fn identify(
        &self,
        request: HandshakeRequest,
    ) -> impl Future<Output = Result<Option<Username>, Refusal>> + Send {
        self(request)
    }
}

/// The future of one boxed identification.
type Identifying<'a> = Pin<Box<dyn Future<Output = Result<Option<Username>, Refusal>> + Send + 'a>>;

/// The object-safe form tally stores: one boxed future per handshake.
pub(crate) trait DynIdentityProvider: Send + Sync {
    fn identify_boxed(&self, request: HandshakeRequest) -> Identifying<'_>;
}

impl<P: IdentityProvider> DynIdentityProvider for P {
    fn identify_boxed(&self, request: HandshakeRequest) -> Identifying<'_> {
        Box::pin(self.identify(request))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_are_found_by_exact_name() {
        let mut headers = HeaderMap::new();
        headers.insert(
            axum::http::header::COOKIE,
            "theme=dark; session=abc=1; sessionx=no".parse().unwrap(),
        );
        let request = HandshakeRequest {
            headers,
            uri: Uri::from_static("/socket.io/"),
            auth: None,
        };
        assert_eq!(request.cookie("session"), Some("abc=1"));
        assert_eq!(request.cookie("theme"), Some("dark"));
        assert_eq!(request.cookie("sess"), None);
    }
}
