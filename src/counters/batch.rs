//! The counting thread: every request waiting to be counted in Redis (the
//! event loops' parked ones, a worker's) goes out in one script call per
//! batch, one write and one answer, and each answer is handed to its
//! request's `Done`. Redis runs the script once per batch, not once per
//! request. A batch fails as a whole only when Redis cannot be reached or
//! does not know the script (it is loaded and the batch sent again: it did
//! not run); a command error fails only its own request.

use std::sync::Arc;
use std::thread;

use crossbeam_channel::{Receiver, Sender};
use redis::{Script, Value};

use super::Done;
use super::shared::{COUNT_LUA, Slots};
use crate::error::Error;
use crate::store::Redis;

/// Most requests counted in one script call (Redis serves no one else
/// while it runs).
const MAX_BATCH: usize = 256;

/// One request to count.
pub(super) struct Job {
    pub slots: Slots,
    pub done: Done,
}

/// Starts the counting thread; it ends when the sender is dropped.
pub(super) fn spawn(redis: Arc<Redis>) -> Sender<Job> {
    let (tx, rx) = crossbeam_channel::unbounded();
    let script = Script::new(COUNT_LUA);
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
        deliver(redis, batch, answers);
    }
}

/// Hands each request of `batch` its answer.
pub(super) fn deliver(redis: &Redis, batch: Vec<Job>, answers: Vec<Answer>) {
    for (job, answer) in batch.into_iter().zip(answers) {
        let counted = answer
            .map(|a| job.slots.read(&a))
            .map_err(|m| redis.error(m));
        (job.done)(counted);
    }
}

/// What Redis answered one request: the script's numbers, or why not.
pub(super) type Answer = Result<Vec<i64>, String>;

/// The script call that counts `batch`.
pub(super) fn command(script: &Script, batch: &[Job]) -> redis::Cmd {
    let mut call = redis::cmd("EVALSHA");
    call.arg(script.get_hash())
        .arg(batch.iter().map(|j| j.slots.len()).sum::<usize>());
    for job in batch {
        for key in job.slots.keys() {
            call.arg(key);
        }
    }
    call.arg(batch.len());
    for job in batch {
        call.arg(job.slots.len());
    }
    for job in batch {
        for arg in job.slots.args() {
            call.arg(arg);
        }
    }
    call
}

/// The script's answers for `batch`, in order.
fn send(redis: &Redis, script: &Script, batch: &[Job]) -> Vec<Answer> {
    let call = command(script, batch);
    let mut unknown = false;
    let mut sent = redis.run(|c| match call.query::<Value>(c) {
        Err(e) if e.code() == Some("NOSCRIPT") => {
            unknown = true;
            Ok(Value::Nil)
        }
        other => other,
    });
    if unknown {
        sent = redis.run(|c| {
            script.load(c)?;
            call.query::<Value>(c)
        });
    }
    match sent.map(redis::from_redis_value::<String>) {
        Ok(Ok(text)) => answers(&text, batch.len()),
        Ok(Err(e)) => failed(format!("the counting script answered {e}"), batch.len()),
        Err(e) => failed(message(e), batch.len()),
    }
}

/// `n` requests' answers from the script's reply.
pub(super) fn answers(text: &str, n: usize) -> Vec<Answer> {
    let answers: Vec<Answer> = text.split('\n').map(answer).collect();
    if answers.len() != n {
        return failed(format!("{} answers to {n} requests", answers.len()), n);
    }
    answers
}

/// The same failure for `n` requests.
pub(super) fn failed(why: String, n: usize) -> Vec<Answer> {
    vec![Err(why); n]
}

/// One request's line of the script's answer.
fn answer(line: &str) -> Answer {
    if let Some(why) = line.strip_prefix('!') {
        return Err(format!("counting script: {why}"));
    }
    line.split(' ')
        .map(|n| {
            n.parse::<i64>()
                .map_err(|_| format!("the counting script answered {line:?}"))
        })
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

#[cfg(test)]
mod tests {
    use super::answer;

    #[test]
    fn a_line_is_numbers_or_an_error() {
        assert_eq!(answer("3 0 7 3599000"), Ok(vec![3, 0, 7, 3_599_000]));
        assert_eq!(
            answer("!WRONGTYPE Operation against a key"),
            Err("counting script: WRONGTYPE Operation against a key".to_string())
        );
        assert!(answer("3 x").is_err());
        assert!(answer("").is_err());
    }
}
