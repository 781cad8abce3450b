//! `/debug/pprof/faults`: a profile taken by a stack-counting engine of its own, folding the
//! processes that are gone as it goes, and answered when its time is up.

use std::time::{Duration, Instant};

use anyhow::Result;
use axum::http::StatusCode;
use aya::maps::{MapData, RingBuf};
use tokio::{io::unix::AsyncFd, sync::oneshot};

use super::{collect::alive, release_free_memory, Exporter};
use crate::{
    session::{self, Session},
    stacks::{self, StackCounts, Weight},
};

/// A pprof profile being taken, by a second, stack-counting engine of its own.
pub(super) struct Profiling {
    pub(super) session: Session,
    pub(super) ring: AsyncFd<RingBuf<MapData>>,
    pub(super) counts: StackCounts,
    /// When the counts of processes that are gone were last folded.
    pub(super) folded: Instant,
    pub(super) until: Instant,
    pub(super) reply: oneshot::Sender<Result<Vec<u8>, (StatusCode, String)>>,
}

/// How often a profile folds the counts of processes that are gone: what it holds of them
/// until then grows with the processes started meanwhile (about 50 KiB each, for a small C
/// program).
const FOLD_EVERY: Duration = Duration::from_secs(1);

impl Exporter {
    pub(super) fn start_profile(
        &mut self,
        seconds: u64,
        reply: oneshot::Sender<Result<Vec<u8>, (StatusCode, String)>>,
    ) {
        if let Some(p) = &self.profiling {
            let left = p.until.saturating_duration_since(Instant::now()).as_secs() + 1;
            let _ = reply.send(Err((
                StatusCode::TOO_MANY_REQUESTS,
                format!("a profile is being taken: try again in {left} s\n"),
            )));
            return;
        }
        let mut plan = stacks::plan(
            true,
            true,
            &self.args.filter,
            pfault_common::capacity::STACK_COUNTS,
            &Weight::ALL,
        );
        self.args.unwind.apply(&mut plan);
        let started = Session::start(&self.args.session_target(), None, &plan).and_then(|mut session| {
            let ring = session.events()?;
            Ok((session, ring))
        });
        match started {
            Ok((session, ring)) => {
                let max = self.args.max_profile_stacks;
                let counts = StackCounts::new(
                    session.symbols(self.args.target.pid),
                    session.engine.unwind_tables(),
                    false,
                    false,
                )
                .capped(max, format!("[stacks past --max-profile-stacks {max}]"));
                self.profiling = Some(Profiling {
                    counts,
                    folded: Instant::now(),
                    session,
                    ring,
                    until: Instant::now() + Duration::from_secs(seconds),
                    reply,
                })
            }
            Err(e) => {
                let _ = reply.send(Err((StatusCode::INTERNAL_SERVER_ERROR, format!("{e:#}\n"))));
            }
        }
    }

    /// Reads a profile's stacks as they come, and answers it when its time is up.
    pub(super) fn tend_profile(&mut self) -> Result<()> {
        let Some(p) = &mut self.profiling else {
            return Ok(());
        };
        // The client gave up (its connection closed, so its handler and receiver are gone):
        // the profile ends now, and the next one can start.
        if p.reply.is_closed() {
            self.profiling = None;
            return Ok(());
        }
        let gone = if p.folded.elapsed() >= FOLD_EVERY {
            p.folded = Instant::now();
            Some(p.counts.gone(&mut p.session.engine, alive)?)
        } else {
            None
        };
        let counts = &mut p.counts;
        session::drain_records(&p.session.engine, p.ring.get_mut(), |r| {
            counts.record(r);
            Ok(())
        })?;
        if let Some(gone) = gone {
            p.counts.fold(&mut p.session.engine, gone)?;
            // What the gone processes held lies scattered through the heap.
            release_free_memory();
        }
        if Instant::now() < p.until {
            return Ok(());
        }
        let mut p = self.profiling.take().expect("checked above");
        let body = p
            .counts
            .rows(&mut p.session.engine, true)
            .and_then(|rows| p.counts.pprof(&rows).gzipped())
            .map_err(|e| (StatusCode::INTERNAL_SERVER_ERROR, format!("{e:#}\n")));
        let _ = p.reply.send(body);
        Ok(())
    }
}
