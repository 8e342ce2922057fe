//! Cluster signals: the subscriber to Tyk's `tyk.cluster.notifications`
//! (REDIS.md §7). Messages not signed with this gateway's `node_secret`
//! are dropped with a warning. After Redis comes back, every cached
//! session is forgotten, since notices sent meanwhile were lost.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::Duration;

use super::redis::{CHANNEL, Notification, Redis};

/// What another gateway (or this one) told the cluster.
#[derive(Debug, PartialEq, Eq)]
pub enum Signal {
    /// Sessions stored under these ids changed.
    KeysChanged(Vec<String>),
    /// API definitions or policies changed: reload from our own files.
    Reload(String),
    /// (Re)subscribed: anything cached may have missed notices.
    Subscribed,
}

/// A notification's meaning, if it is one we act on.
pub fn read(n: &Notification) -> Option<Signal> {
    match n.command.as_str() {
        // Comma-separated ids; text after `:` is dropped (Tyk).
        "KeySpaceUpdateNotification" => Some(Signal::KeysChanged(
            n.payload
                .split(',')
                .map(|k| k.split(':').next().unwrap_or_default().trim().to_string())
                .filter(|k| !k.is_empty())
                .collect(),
        )),
        "ApiUpdated" | "ApiAdded" | "ApiRemoved" | "PolicyChanged" | "GroupReload" => {
            Some(Signal::Reload(n.command.clone()))
        }
        _ => None,
    }
}

/// Listens until `stop`, calling `on` for each signal; reconnects with a
/// growing pause (at most 1 s) while Redis is away.
pub fn listen(
    redis: Arc<Redis>,
    secret: String,
    stop: Arc<AtomicBool>,
    on: impl Fn(Signal) + Send + 'static,
) -> thread::JoinHandle<()> {
    thread::Builder::new()
        .name("gatehouse-cluster".into())
        .spawn(move || {
            let mut pause = Duration::from_millis(50);
            while !stop.load(Ordering::SeqCst) {
                match subscribe(&redis, &secret, &stop, &on) {
                    Ok(()) => return,
                    Err(e) => {
                        log::warn!("cluster: subscription to {CHANNEL} lost ({e}); retrying");
                        thread::sleep(pause);
                        pause = (pause * 2).min(Duration::from_secs(1));
                    }
                }
            }
        })
        .expect("spawn the cluster listener")
}

fn subscribe(
    redis: &Redis,
    secret: &str,
    stop: &AtomicBool,
    on: &impl Fn(Signal),
) -> Result<(), String> {
    let mut conn = redis.connect().map_err(|e| e.to_string())?;
    let mut sub = conn.as_pubsub();
    sub.subscribe(CHANNEL).map_err(|e| e.to_string())?;
    // A short read timeout lets the loop see `stop`.
    sub.set_read_timeout(Some(Duration::from_millis(250)))
        .map_err(|e| e.to_string())?;
    log::info!(
        "cluster: listening on {CHANNEL} at redis://{}",
        redis.addr()
    );
    on(Signal::Subscribed);
    while !stop.load(Ordering::SeqCst) {
        let msg = match sub.get_message() {
            Ok(m) => m,
            Err(e) if e.is_timeout() => continue,
            Err(e) => return Err(e.to_string()),
        };
        let Ok(text) = msg.get_payload::<String>() else {
            continue;
        };
        let n: Notification = match serde_json::from_str(&text) {
            Ok(n) => n,
            Err(e) => {
                log::warn!("cluster: unreadable message on {CHANNEL}: {e}");
                continue;
            }
        };
        if !n.verify(secret) {
            log::warn!(
                "cluster: dropped a {:?} message whose signature does not match node_secret",
                n.command
            );
            continue;
        }
        if let Some(signal) = read(&n) {
            on(signal);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_notices_name_ids_and_reloads_are_coalesced_commands() {
        let n = Notification::new("KeySpaceUpdateNotification", "a,b:x, ,c", "s");
        assert_eq!(
            read(&n),
            Some(Signal::KeysChanged(vec![
                "a".into(),
                "b".into(),
                "c".into()
            ]))
        );
        let n = Notification::new("GroupReload", "", "s");
        assert_eq!(read(&n), Some(Signal::Reload("GroupReload".into())));
        assert_eq!(
            read(&Notification::new(
                "NoticeGatewayDRLNotification",
                "{}",
                "s"
            )),
            None
        );
    }
}
