//! The engine's side of the metrics server ([`super::metrics_server`]): its completions
//! dispatched, the page rendered from the live engine (`/metrics` through
//! [`crate::metrics::prometheus`], `/healthz` through [`crate::metrics::health`]), and its part
//! of the tick (when each endpoint went down, the connections' deadlines).
//!
//! Must never: read a clock (the wall-clock start comes from the driver, the rest is `io.now`),
//! or render anything but at a request.

use super::io::{Completion, Fd};
use super::metrics_server::{HttpCounters, MetricsServer, ProcessInfo};
use super::token::{OpKind, Token};
use super::{input_state, output_state, split, Cx, Engine, Io};
use crate::metrics::health;
use crate::metrics::http::{self, Request, Status, Target};
use crate::metrics::{prometheus, LiveInfo, Snapshot};
use std::time::Instant;

impl Engine {
    /// Starts the metrics server on `listener` (bound and listening, by the driver); `info`
    /// is what the page says about the process.
    pub fn start_metrics(&mut self, listener: Fd, info: ProcessInfo, io: &mut Io) {
        let mut srv = MetricsServer::new(listener, self.gens.fresh());
        self.process = info;
        let (_, mut cx) = split!(self, io);
        srv.arm_accept(&mut cx);
        self.http = Some(srv);
    }

    /// Operations in flight on the ring now (the driver says so at each batch; the page's
    /// `ringrelay_ring_inflight`).
    pub fn note_ring_in_flight(&mut self, n: usize) {
        if let Some(s) = self.http.as_mut() {
            s.ring_in_flight = n;
        }
    }

    /// The metrics server's counters, if it runs.
    pub fn http_counters(&self) -> Option<HttpCounters> {
        self.http.as_ref().map(|s| s.counters)
    }

    /// A completion of the metrics server.
    pub(super) fn on_http(&mut self, c: Completion, tok: Token, io: &mut Io) {
        let Some(mut srv) = self.http.take() else {
            if tok.kind == OpKind::HttpAccept && c.res >= 0 {
                io.sys.close(c.res);
            }
            return;
        };
        let want = {
            let allow = self.cfg.global.metrics_allow.clone();
            let (_, mut cx) = split!(self, io);
            if tok.kind == OpKind::HttpAccept {
                if tok.gen == srv.gen {
                    srv.on_accept(&mut cx, c, &allow);
                } else if c.res >= 0 {
                    cx.sys.close(c.res);
                }
                None
            } else {
                let slot = tok.ep as usize;
                let current = srv
                    .conns
                    .get(slot)
                    .and_then(|c| c.as_ref())
                    .is_some_and(|c| c.gen == tok.gen);
                if current {
                    srv.on_conn(&mut cx, slot, tok.kind, c.res)
                } else {
                    srv.on_closed_conn(&mut cx, tok.gen, tok.kind);
                    None
                }
            }
        };
        if let Some((slot, req)) = want {
            let (bytes, close_after) = self.page(&srv, req, io.now);
            if !matches!(req, Ok(r) if r.allowed_method && r.target != Target::Unknown) {
                srv.counters.rejected += u64::from(req.is_err());
            }
            let (_, mut cx) = split!(self, io);
            srv.respond(&mut cx, slot, bytes, close_after, req.is_err());
        }
        self.http = Some(srv);
    }

    /// The whole response to `req` (head and body), and whether the connection closes after.
    fn page(
        &self,
        srv: &MetricsServer,
        req: Result<Request, Status>,
        now: Instant,
    ) -> (Vec<u8>, bool) {
        let (status, ctype, body, keep, head_only) = match req {
            Err(s) => (
                s,
                http::TEXT_TYPE,
                format!("{}\n", s.reason()),
                false,
                false,
            ),
            Ok(r) if !r.allowed_method => (
                Status::MethodNotAllowed,
                http::TEXT_TYPE,
                "only GET and HEAD\n".to_string(),
                r.keep_alive,
                false,
            ),
            Ok(r) => match r.target {
                Target::Unknown => (
                    Status::NotFound,
                    http::TEXT_TYPE,
                    "not found: try /metrics or /healthz\n".to_string(),
                    r.keep_alive,
                    r.head,
                ),
                Target::Metrics => (
                    Status::Ok,
                    http::PROMETHEUS_TYPE,
                    self.render_metrics(srv, now),
                    r.keep_alive,
                    r.head,
                ),
                Target::Healthz => {
                    let snap = self.snapshot(srv, now);
                    let p =
                        health::problems(&snap, &srv.down_since, now, self.cfg.global.health_grace);
                    if p.is_empty() {
                        (
                            Status::Ok,
                            http::TEXT_TYPE,
                            "ok\n".to_string(),
                            r.keep_alive,
                            r.head,
                        )
                    } else {
                        let mut b = p.join("\n");
                        b.push('\n');
                        (
                            Status::ServiceUnavailable,
                            http::TEXT_TYPE,
                            b,
                            r.keep_alive,
                            r.head,
                        )
                    }
                }
            },
        };
        let keep = keep && !self.stopping();
        let mut out = http::response_head(status, ctype, body.len(), keep).into_bytes();
        if !head_only {
            out.extend_from_slice(body.as_bytes());
        }
        (out, !keep)
    }

    fn snapshot(&self, srv: &MetricsServer, now: Instant) -> Snapshot {
        let p = &self.process;
        let elapsed = p
            .started
            .map_or(0, |s| now.saturating_duration_since(s).as_nanos() as i64);
        let mut s = Snapshot::from_engine(self, p.started_real_ns, p.started_real_ns + elapsed);
        s.live = Some(LiveInfo {
            ring_in_flight: srv.ring_in_flight as u64,
            kernel: p.kernel.clone(),
            features: p.features.clone(),
            regions: self
                .channels
                .iter()
                .flatten()
                .filter_map(|ch| {
                    ch.publisher
                        .as_ref()
                        .map(|pb| (ch.name().to_string(), pb.frames_written()))
                })
                .collect(),
            http: srv.counters,
        });
        s
    }

    fn render_metrics(&self, srv: &MetricsServer, now: Instant) -> String {
        prometheus::render(&self.snapshot(srv, now))
    }

    /// The metrics server's part of the tick: what is down since when, deadlines, parked
    /// buffers.
    pub(super) fn http_tick(&mut self, io: &mut Io) {
        let Some(mut srv) = self.http.take() else {
            return;
        };
        let now = io.now;
        for ch in self.channels.iter().flatten() {
            let name = ch.name();
            srv.down_since
                .observe(now, name, 0, health::input_down(input_state(ch)));
            for (k, o) in ch.outputs.iter().enumerate() {
                srv.down_since
                    .observe(now, name, k + 1, health::output_down(output_state(ch, o)));
            }
        }
        let chans = &self.channels;
        srv.down_since
            .retain(|n| chans.iter().flatten().any(|c| c.name() == n));
        {
            let (_, mut cx) = split!(self, io);
            srv.tick(&mut cx);
        }
        self.http = Some(srv);
    }

    /// Shutdown: the metrics server closes its listener and connections.
    pub(super) fn http_stop(&mut self, io: &mut Io) {
        let Some(mut srv) = self.http.take() else {
            return;
        };
        {
            let (_, mut cx) = split!(self, io);
            srv.stop(&mut cx);
        }
        self.http = Some(srv);
    }

    /// Whether the metrics server (if any) has nothing open or in flight.
    pub(super) fn http_idle(&self) -> bool {
        self.http.as_ref().is_none_or(MetricsServer::idle)
    }
}
