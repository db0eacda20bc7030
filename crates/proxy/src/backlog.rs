//! Finishing a response's decoding backlog where it cannot slow other requests down.
//!
//! A compressed response is decoded in slices while it passes (`tollgate_usage::Scanner`); what
//! the slices could not get to is decoded when the body has ended, before the call is settled.
//! That can take the decode budget's whole CPU time. Done on Tokio's blocking pool, it ran at the
//! same priority as the threads serving requests and took whole scheduler slices from them: with
//! the gateway on one core, two such responses in a loop raised everyone else's latency by tens
//! of milliseconds. So it runs on one thread of its own, started on first use, at the lowest
//! priority the system has (`SCHED_IDLE` on Linux, which an unprivileged process may choose):
//! it gets the CPU when nothing else wants it, and gives it up at every wake-up of a request.
//!
//! Decoding waits for the CPU there, so the call waits with it; it is settled, and recorded, when
//! its backlog is done. A call still waiting when a shutdown's grace period ends is recorded by
//! the shutdown, as any call cut off (`inflight`), since its decoding comes before it is taken
//! out of the calls in flight. If the thread cannot start, or cannot lower its priority, the
//! backlog is decoded as before and a warning says why.

use std::sync::OnceLock;
use std::sync::mpsc::{self, SendError, Sender};

use thread_priority::{
    NormalThreadSchedulePolicy, ThreadPriority, ThreadSchedulePolicy,
    set_thread_priority_and_policy, thread_native_id,
};
use tollgate_usage::{Scanned, Scanner};

type Job = Box<dyn FnOnce() + Send>;

/// The decoding thread's queue; none if it could not start.
static QUEUE: OnceLock<Option<Sender<Job>>> = OnceLock::new();

/// Finishes `scanner` on the decoding thread; on the blocking pool if that is not running.
/// None if the decoding ended without a result (it panicked).
pub(crate) async fn finish(scanner: Scanner) -> Option<Scanned> {
    let (done, result) = tokio::sync::oneshot::channel();
    let job: Job = Box::new(move || {
        // The call may have been dropped meanwhile: then nobody wants the result.
        let _ = done.send(scanner.finish());
    });
    let unsent = match QUEUE.get_or_init(start) {
        Some(queue) => queue.send(job).err().map(|SendError(job)| job),
        None => Some(job),
    };
    if let Some(job) = unsent {
        let _ = tokio::task::spawn_blocking(job).await;
    }
    result.await.ok()
}

fn start() -> Option<Sender<Job>> {
    let (queue, jobs) = mpsc::channel::<Job>();
    let started = std::thread::Builder::new()
        .name("tollgate-decode".to_owned())
        .spawn(move || {
            lower_priority();
            for job in jobs {
                job();
            }
        });
    match started {
        Ok(_) => Some(queue),
        Err(e) => {
            tracing::warn!(error = %e, "the decoding thread did not start: backlogs are decoded on the blocking pool");
            None
        }
    }
}

fn lower_priority() {
    let idle = ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Idle);
    if let Err(e) = set_thread_priority_and_policy(thread_native_id(), ThreadPriority::Min, idle) {
        tracing::warn!(
            error = ?e,
            "the decoding thread could not lower its priority: backlogs compete with requests for the CPU"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The thread's scheduling policy as Linux reports it: field 41 of `/proc/self/task/<tid>/stat`.
    fn policy_of(thread_name: &str) -> Option<u32> {
        for task in std::fs::read_dir("/proc/self/task").ok()? {
            let dir = task.ok()?.path();
            let comm = std::fs::read_to_string(dir.join("comm")).ok()?;
            if comm.trim() == thread_name {
                let stat = std::fs::read_to_string(dir.join("stat")).ok()?;
                // After the command's closing parenthesis, fields start at the 3rd.
                let rest = &stat[stat.rfind(')')? + 2..];
                return rest.split(' ').nth(41 - 3)?.parse().ok();
            }
        }
        None
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_scanner_is_finished_on_a_thread_at_idle_priority_with_what_it_read() {
        let facts = tollgate_usage::RequestFacts::default();
        let info = tollgate_usage::RequestInfo {
            provider: tollgate_domain::Provider::OpenAi,
            method: "POST",
            path: "/v1/chat/completions",
            query: None,
            request: &facts,
            response_status: 200,
            response_content_type: Some("application/json"),
            response_content_encoding: None,
        };
        let body = br#"{"model":"gpt-4o","usage":{"prompt_tokens":7,"completion_tokens":3,"total_tokens":10}}"#;
        let mut here = tollgate_usage::scanner(&info);
        here.feed(body);
        let mut there = tollgate_usage::scanner(&info);
        there.feed(body);

        let scanned = finish(there).await.unwrap();

        assert_eq!(scanned, here.finish());
        assert_eq!(scanned.usage.input_tokens, 7);
        // SCHED_IDLE is 5 in Linux's numbering.
        assert_eq!(policy_of("tollgate-decode"), Some(5));
    }
}
