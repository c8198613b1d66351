//! What cgihost decided about a request that its scripts see as
//! meta-variables, carried in the request's extensions through rewrites,
//! local redirects and error pages (`cgi::env` reads them). Only cgihost
//! inserts these; nothing a client sends can set them.

use http::Uri;

/// The URI as the client sent it, before any rewrite: `REQUEST_URI`.
#[derive(Debug, Clone)]
pub struct ClientUri(pub Uri);

/// The user an `[[auth]]` rule authenticated: `AUTH_TYPE=Basic`,
/// `REMOTE_USER`.
#[derive(Debug, Clone)]
pub struct RemoteUser(pub String);

/// An `[errors]` page being served for another request:
/// `REDIRECT_STATUS`, `REDIRECT_URL`, `REDIRECT_QUERY_STRING`.
#[derive(Debug, Clone)]
pub struct ErrorRedirect {
    pub status: u16,
    /// The path the client asked for.
    pub url: String,
    pub query: Option<String>,
}

/// Extra variables from the configuration (`[cgi] env`, a route's
/// `params`), set after the meta-variables.
#[derive(Debug, Clone, Default)]
pub struct ExtraVars(pub std::sync::Arc<[(String, String)]>);
