//! WebSocket close codes the protocol uses (spec §6, §7). The one home of these numbers.

/// Policy violation (1008): auth failures, revoked keys, auth and keep-alive timeouts.
pub const POLICY: u16 = 1008;
/// Going away (1001): the relay is shutting down.
pub const GOING_AWAY: u16 = 1001;
/// Message too big (1009): a WebSocket message over the frame limit.
pub const TOO_BIG: u16 = 1009;
/// Try again later (1013): the relay is at its connection cap.
pub const TRY_LATER: u16 = 1013;
