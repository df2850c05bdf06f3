//! The rebate side thread: computes each deposit's rebate with the
//! [`RebatePolicy`] away from the business thread and sends it back through
//! the ring as an ordinary `CreditRebate` request, so it is sequenced (and
//! journaled) like any other input. The Ledger ignores a credit for a rebate
//! that is no longer owed, which makes a repeated credit harmless.

use std::sync::Arc;
use std::thread::{self, JoinHandle};

use crossbeam::channel::Receiver;

use super::{Client, EngineError, Shared};
use crate::rebate::{RebateJob, RebatePolicy};
use crate::request::Request;

/// Most credits sent before their answers are collected.
const CREDITS_IN_FLIGHT_MAX: usize = 256;

struct PanicGuard(Arc<Shared>);

impl Drop for PanicGuard {
    fn drop(&mut self) {
        if thread::panicking() {
            self.0
                .fail("the rebate thread panicked (is the RebatePolicy sound?)".into());
        }
    }
}

pub(super) fn spawn(
    shared: Arc<Shared>,
    mut client: Client,
    policy: Box<dyn RebatePolicy>,
    jobs: Receiver<RebateJob>,
) -> Result<JoinHandle<()>, EngineError> {
    thread::Builder::new()
        .name("ringledger-rebates".into())
        .spawn(move || {
            let _guard = PanicGuard(shared);
            // Ends when the business thread drops its sender (shutdown) or
            // the ring refuses the credit (engine stopped).
            while let Ok(job) = jobs.recv() {
                let mut batch = 0;
                for job in
                    std::iter::once(job).chain(jobs.try_iter().take(CREDITS_IN_FLIGHT_MAX - 1))
                {
                    let amount = policy.rebate(&job);
                    // A policy must answer within 0..=deposit; anything else
                    // would mint or destroy money, so it becomes no rebate.
                    let amount = if (0..=job.amount).contains(&amount) {
                        amount
                    } else {
                        0
                    };
                    let credit = Request::CreditRebate {
                        deposit_seq: job.deposit_seq,
                        amount,
                    };
                    if client.send(credit).is_err() {
                        return;
                    }
                    batch += 1;
                }
                for _ in 0..batch {
                    if client.recv().is_err() {
                        return;
                    }
                }
            }
        })
        .map_err(EngineError::Io)
}
