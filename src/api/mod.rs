//! HTTP handlers only: they translate between HTTP and the routing room, and
//! hold no routing logic of their own.

pub mod admin;
pub mod auth;
pub mod docs;
pub mod extract;
pub mod openai;
pub mod schema;

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::SystemTime;

use crate::auth::Auth;
use crate::config::Config;
use crate::routing::Dispatcher;

/// What every handler shares. Immutable after start-up except for the atomics
/// and swappable model lists inside `dispatcher`.
pub struct AppState {
    pub config: Arc<Config>,
    pub dispatcher: Dispatcher,
    /// Shared with the auth middleware, which needs nothing else.
    pub auth: Arc<Auth>,
    pub started_at: SystemTime,
    /// `/ready`: set once start-up (first discovery) is done, cleared when
    /// shutdown begins so load balancers stop sending new work.
    pub ready: AtomicBool,
}
