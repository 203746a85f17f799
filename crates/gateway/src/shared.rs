//! The gateway-wide state every task shares: the settings, the
//! authenticator, presence, this instance's connections, the shutdown signal.
//! One per gateway, behind an `Arc`; a session holds a clone of the `Arc`,
//! never a copy of what is inside.

use std::sync::Arc;

use pulse_auth::Authenticator;
use pulse_presence::Presence;
use tokio_util::sync::CancellationToken;

use pulse_presence::FeedEvent;
use tokio::sync::mpsc;

use crate::{
    ConnectionManager, Settings, channels::Channels, hooks::Hook, limits::Unauthenticated,
    readiness::Readiness, telemetry::Metrics,
};

/// What the accept loop, every session, the lease, the command task and the
/// drain share.
pub(crate) struct Shared {
    /// The gateway's settings, validated before it was built.
    pub(crate) settings: Settings,
    /// Validates tokens, in-process or through `pulse-auth`.
    pub(crate) auth: Authenticator,
    /// Where connections are registered and admitted, and commands arrive.
    pub(crate) presence: Presence,
    /// This instance's live connections, by user.
    pub(crate) manager: Arc<ConnectionManager>,
    /// Cancelled once shutdown begins: no new socket is accepted or greeted.
    pub(crate) shutdown: CancellationToken,
    /// The dependency checks behind `/readyz`.
    pub(crate) readiness: Arc<Readiness>,
    /// Sockets per client that have not authenticated yet.
    pub(crate) unauthenticated: Arc<Unauthenticated>,
    /// The gateway's metric handles, looked up once.
    pub(crate) metrics: Metrics,
    /// Held for writing by a re-sync from its snapshot of the manager to its
    /// last registration, and for reading by a refused admission while it
    /// takes its connection back out: a re-sync never registers a
    /// connection that was refused.
    pub(crate) resync: tokio::sync::RwLock<()>,
    /// This instance's channel subscriptions and their feed.
    pub(crate) channels: Arc<Channels>,
    /// The application's authorization hook, when the config file names one.
    pub(crate) hook: Option<Hook>,
}

impl Shared {
    /// A gateway's shared state, before it serves.
    /// Also returns where the publications of its channels arrive, for the
    /// fan-out task.
    pub(crate) fn new(
        settings: Settings,
        auth: Authenticator,
        presence: Presence,
    ) -> (Self, mpsc::UnboundedReceiver<FeedEvent>) {
        let readiness = Arc::new(Readiness::new(settings.auth_url.as_deref()));
        let (channels, deliveries) = Channels::new(&presence);
        // `Config::build` tried the same (one line at start); here a hook
        // that cannot be built refuses hook subscriptions with its reason.
        let hook = settings
            .namespaces
            .hooks
            .as_ref()
            .map(|config| Hook::new(config).unwrap_or_else(Hook::broken));
        let shared = Self {
            hook,
            channels: Arc::new(channels),
            readiness,
            settings,
            auth,
            presence,
            manager: Arc::new(ConnectionManager::new()),
            unauthenticated: Arc::default(),
            metrics: Metrics::new(),
            shutdown: CancellationToken::new(),
            resync: tokio::sync::RwLock::new(()),
        };
        (shared, deliveries)
    }
}
