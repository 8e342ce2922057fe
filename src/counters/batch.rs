//! Counting for the event loops: one thread takes every request waiting
//! to be counted in Redis and sends them in one pipelined write (an
//! EVALSHA of the counting script each), then hands each answer to its
//! request's `Done`. The loops never wait on Redis, and Redis reads one
//! write per batch, not one per request. A batch fails as a whole only
//! when Redis cannot be reached (each request is refused with 503, never
//! served uncounted); a script error fails only its own request.

use std::sync::Arc;
use std::thread;

use crossbeam_channel::{Receiver, Sender};
use redis::{Script, Value};

use super::Done;
use super::shared::Slots;
use crate::error::Error;
use crate::store::Redis;

/// Most requests sent in one write.
const MAX_BATCH: usize = 512;

/// One request to count.
pub(super) struct Job {
    pub slots: Slots,
    pub done: Done,
}

/// Starts the counting thread; it ends when the sender is dropped.
pub(super) fn spawn(redis: Arc<Redis>, script: Script) -> Sender<Job> {
    let (tx, rx) = crossbeam_channel::unbounded();
    let started = thread::Builder::new()
        .name("redis-count".into())
        .spawn(move || run(&redis, &script, &rx));
    if let Err(e) = started {
        // Every request counted later is then refused (503), with a reason.
        log::error!("redis: no counting thread for the event loops: {e}");
    }
    tx
}

fn run(redis: &Redis, script: &Script, jobs: &Receiver<Job>) {
    while let Ok(first) = jobs.recv() {
        let mut batch = vec![first];
        batch.extend(jobs.try_iter().take(MAX_BATCH - 1));
        let answers = send(redis, script, &batch);
        for (job, answer) in batch.into_iter().zip(answers) {
            let counted = answer
                .map(|a| job.slots.read(&a))
                .map_err(|m| redis.error(m));
            (job.done)(counted);
        }
    }
}

/// What Redis answered one request: the script's numbers, or why not.
type Answer = Result<Vec<i64>, String>;

/// The script's answers for `batch`, in order. A script Redis has not
/// loaded (a restart, SCRIPT FLUSH) is loaded and the requests it
/// refused are sent again: they were not counted.
fn send(redis: &Redis, script: &Script, batch: &[Job]) -> Vec<Answer> {
    let mut answers: Vec<Option<Answer>> = batch.iter().map(|_| None).collect();
    for attempt in 0..2 {
        let todo: Vec<usize> = (0..batch.len()).filter(|&i| answers[i].is_none()).collect();
        let sent = redis.run(|c| {
            let mut pipe = redis::pipe();
            pipe.ignore_errors();
            for &i in &todo {
                let slots = &batch[i].slots;
                let call = pipe.cmd("EVALSHA").arg(script.get_hash()).arg(slots.len());
                for key in slots.keys() {
                    call.arg(key);
                }
                for arg in slots.args() {
                    call.arg(arg);
                }
            }
            pipe.query::<Vec<Value>>(c)
        });
        let values = match sent {
            Ok(values) if values.len() == todo.len() => values,
            Ok(values) => {
                let why = format!("{} answers to {} scripts", values.len(), todo.len());
                return fill(answers, &why);
            }
            Err(e) => return fill(answers, &message(e)),
        };
        let mut unloaded = false;
        for (i, value) in todo.into_iter().zip(values) {
            answers[i] = match value {
                Value::ServerError(e) if e.code() == "NOSCRIPT" && attempt == 0 => {
                    unloaded = true;
                    None
                }
                Value::ServerError(e) => Some(Err(format!("counting script: {e}"))),
                v => Some(
                    redis::from_redis_value::<Vec<i64>>(v)
                        .map_err(|e| format!("counting script answered {e}")),
                ),
            };
        }
        if !unloaded {
            break;
        }
        if let Err(e) = redis.run(|c| script.load(c)) {
            return fill(answers, &message(e));
        }
    }
    fill(answers, "the counting script could not be loaded")
}

/// Every answer, those still missing failed with `why`.
fn fill(answers: Vec<Option<Answer>>, why: &str) -> Vec<Answer> {
    answers
        .into_iter()
        .map(|a| a.unwrap_or_else(|| Err(why.to_string())))
        .collect()
}

/// What a store error says, without its `store redis://…` prefix (the
/// answer's error adds it back).
fn message(e: Error) -> String {
    match e {
        Error::Store { message, .. } => message,
        other => other.to_string(),
    }
}
