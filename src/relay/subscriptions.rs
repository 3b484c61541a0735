//! One connection's subscriptions (spec §9): SUBSCRIBE runs the stored phase (newest
//! events, or a replay after `after_seq`), sends EOSE and goes live; UNSUBSCRIBE ends one.
//! Live delivery itself is the fan-out's ([`super::fanout`]).

use std::collections::HashSet;
use std::sync::Arc;

use super::connections::ConnId;
use super::outbound::{OutFrame, Outbound};
use super::reply::{store_error, sub_error_frame};
use super::store::StoreError;
use super::RelayState;
use crate::clock::unix_now;
use crate::protocol::frame::{encode_event_frame, QueueSubscribe, Subscribe};
use crate::protocol::{Filter, Frame, ProtocolError, Viewer};

/// Events fetched per replay page.
const REPLAY_PAGE: usize = 1000;

/// The subscriptions of one authenticated connection.
pub struct Subscriptions {
    conn: ConnId,
    viewer: Viewer,
    state: Arc<RelayState>,
    outbound: Arc<Outbound>,
    names: HashSet<String>,
}

impl Subscriptions {
    /// No subscriptions yet, for connection `conn` authenticated as `viewer`.
    pub fn new(conn: ConnId, viewer: Viewer, state: Arc<RelayState>, outbound: Arc<Outbound>) -> Subscriptions {
        Subscriptions { conn, viewer, state, outbound, names: HashSet::new() }
    }

    /// UNSUBSCRIBE: ends `sub_id` (unknown ids are a no-op), a queue subscription too.
    pub fn unsubscribe(&mut self, sub_id: &str) {
        self.state.fanout.unsubscribe(self.conn, sub_id);
        self.state.jobs.unsubscribe(&self.state.store, self.conn, sub_id);
        self.names.remove(sub_id);
    }

    /// SUBSCRIBE with `group` (spec §14): checks the bounds and joins the queue; no
    /// stored phase and no EOSE. Reusing a `sub_id` replaces that subscription.
    pub async fn queue_subscribe(&mut self, queue: QueueSubscribe) {
        let config = self.state.config();
        let limits = &config.limits;
        let sub_id = queue.subscribe.sub_id.clone();
        if let Err(error) = queue.subscribe.check_bounds(&limits.protocol()) {
            self.outbound.push(sub_error_frame(&error, &sub_id)).await;
            return;
        }
        if let Err(error) = super::jobs::check_queue_filters(&queue) {
            self.outbound.push(sub_error_frame(&error, &sub_id)).await;
            return;
        }
        if !self.names.contains(&sub_id) && self.names.len() >= limits.max_subscriptions {
            let error = ProtocolError::invalid(format!(
                "a connection holds at most {} subscriptions",
                limits.max_subscriptions
            ));
            self.outbound.push(sub_error_frame(&error, &sub_id)).await;
            return;
        }
        self.state.fanout.unsubscribe(self.conn, &sub_id);
        self.names.insert(sub_id.clone());
        let joined = self.state.jobs.subscribe(&self.state.store, self.conn, queue, self.outbound.clone()).await;
        if let Err(error) = joined {
            self.unsubscribe(&sub_id);
            self.outbound.push(sub_error_frame(&error, &sub_id)).await;
        }
    }

    /// SUBSCRIBE: checks the bounds, registers for live events, sends the stored events,
    /// EOSE, and goes live. Reusing a `sub_id` replaces that subscription.
    pub async fn subscribe(&mut self, subscribe: Subscribe) {
        let config = self.state.config();
        let limits = &config.limits;
        if let Err(error) = subscribe.check_bounds(&limits.protocol()) {
            self.outbound.push(sub_error_frame(&error, &subscribe.sub_id)).await;
            return;
        }
        if !self.names.contains(&subscribe.sub_id) && self.names.len() >= limits.max_subscriptions {
            let error = ProtocolError::invalid(format!(
                "a connection holds at most {} subscriptions",
                limits.max_subscriptions
            ));
            self.outbound.push(sub_error_frame(&error, &subscribe.sub_id)).await;
            return;
        }
        let per_connection = limits.max_filter_items_per_connection;
        if let Err(error) = self.state.fanout.check_filter_items(self.conn, &subscribe, per_connection) {
            self.outbound.push(sub_error_frame(&error, &subscribe.sub_id)).await;
            return;
        }
        let Subscribe { sub_id, filters, after_seq } = subscribe;
        if let Some(after) = after_seq {
            // A cluster node first applies the log through `after` (spec §16).
            if let Err(error) = self.state.store.caught_up_to(after).await {
                self.unsubscribe(&sub_id); // one it would replace ends too
                self.outbound.push(sub_error_frame(&store_error(&error), &sub_id)).await;
                return;
            }
        }
        self.state.jobs.unsubscribe(&self.state.store, self.conn, &sub_id);
        self.names.insert(sub_id.clone());
        let registered = self.state.fanout.subscribe(
            self.conn,
            &sub_id,
            filters.clone(),
            self.viewer,
            self.outbound.clone(),
            after_seq,
            limits.outbound_queue,
        );
        let sent = match after_seq {
            None => self.send_newest(&sub_id, filters, registered.snapshot, limits.max_limit).await,
            Some(after) => self.send_replay(&sub_id, Arc::new(filters), after, registered.snapshot).await,
        };
        if let Err(error) = sent {
            self.unsubscribe(&sub_id);
            self.outbound.push(sub_error_frame(&store_error(&error), &sub_id)).await;
            return;
        }
        if !self.state.fanout.contains(self.conn, &sub_id) {
            return; // replaced or overflowed meanwhile
        }
        self.outbound.push(OutFrame::Binary(Frame::Eose { sub_id: sub_id.clone() }.encode())).await;
        if self.state.fanout.go_live(self.conn, &sub_id).is_err() {
            self.names.remove(&sub_id);
        }
    }

    async fn send_newest(
        &self,
        sub_id: &str,
        filters: Vec<Filter>,
        snapshot: u64,
        max_limit: u64,
    ) -> Result<(), StoreError> {
        let timer = self.state.metrics.query_seconds.start_timer();
        let rows = self.state.store.query_newest(filters, self.viewer, snapshot, unix_now(), max_limit).await?;
        timer.observe_duration();
        for row in rows {
            self.outbound.push(OutFrame::Binary(encode_event_frame(sub_id, row.seq, &row.raw))).await;
        }
        Ok(())
    }

    async fn send_replay(
        &self,
        sub_id: &str,
        filters: Arc<Vec<Filter>>,
        after: u64,
        snapshot: u64,
    ) -> Result<(), StoreError> {
        let mut cursor = after;
        loop {
            let timer = self.state.metrics.query_seconds.start_timer();
            let rows = self
                .state
                .store
                .query_replay_page(filters.clone(), self.viewer, cursor, snapshot, unix_now(), REPLAY_PAGE)
                .await?;
            timer.observe_duration();
            let Some(last) = rows.last().map(|row| row.seq) else {
                return Ok(());
            };
            for row in &rows {
                self.outbound.push(OutFrame::Binary(encode_event_frame(sub_id, row.seq, &row.raw))).await;
            }
            cursor = last;
        }
    }
}
