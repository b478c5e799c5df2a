//! What queries read, and how it changes while serving.
//!
//! ```text
//! map file ─▶ reload (parse, validate, gates) ──────┐
//!   conditions (overrides, health verdicts) ────────┼─▶ View ─▶ prepare (DNS) ─▶ Live ─▶ Store (arc-swap)
//!                              serial (+ state) ─────┘                                      │
//!                                                              DNS answers, tokens, HTTP ◀──┘
//! ```
//!
//! - [`view`]: the effective [`View`]: a map snapshot combined with what
//!   changes a cell's status between map versions ([`Conditions`]), one
//!   immutable value per zone version.
//! - [`store`]: the [`Store`] that holds the [`Live`] value in force (the
//!   view and the answers the DNS layer prepared from it), swapped
//!   atomically; the only way to publish.
//! - [`serial`]: SOA serials that never go backwards.
//! - [`moves`]: planned tenant moves (`[moves]`): their phases in the
//!   view, and the timer that publishes each boundary.
//! - [`quiet`]: when no answer or token of this instance can point at a
//!   cell any more (`quiet_at`).
//! - [`overrides`]: operator overrides, kept in `--state-dir`, expiring.
//! - [`audit`]: the audit log of overrides, health, status changes and
//!   reloads.
//! - [`reload`]: watching the map file and publishing each good new map.
//! - [`system`]: scheduling priority and memory release for the reload
//!   thread.
//!
//! Nothing here knows the DNS wire format: the store is generic over the
//! answers it holds, and `cellns serve` gives it the DNS layer's preparer.

pub mod audit;
pub mod moves;
pub mod overrides;
pub mod quiet;
pub mod reload;
pub mod serial;
pub mod store;
pub(crate) mod system;
pub mod view;

pub use serial::Serials;
pub use store::{Current, Live, ReloadStatus, Store, WatchState};
pub use view::{CellState, Conditions, HealthSummary, StatusSource, View};
