//! The pure rules of expiring overrides that every writer applies the same way
//! ([`LiveConfig::set_for`](crate::LiveConfig::set_for), [`LiveConfig::update`](crate::LiveConfig::update)
//! and admin tools such as `kvc`): which states a write must leave valid as the overrides in
//! effect expire ([`expiry_states`]), and the TTL the server is given ([`whole_seconds`]).

use std::time::{Duration, SystemTime};

/// A TTL the server accepts: whole seconds, at least one, rounded up (what
/// [`LiveConfig::set_for`](crate::LiveConfig::set_for) writes, and when its override expires).
///
/// ```
/// use std::time::Duration;
/// use kv_config::overrides::whole_seconds;
/// assert_eq!(whole_seconds(Duration::from_millis(1500)), Duration::from_secs(2));
/// assert_eq!(whole_seconds(Duration::from_secs(30)), Duration::from_secs(30));
/// assert_eq!(whole_seconds(Duration::ZERO), Duration::from_secs(1));
/// ```
pub fn whole_seconds(ttl: Duration) -> Duration {
    Duration::from_secs((ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0)).max(1))
}

/// The states a write must be checked in, as the overrides expire one after the other: for each
/// state, the keys whose override has expired by then, in the order they expire.
///
/// - `in_effect`: the overrides in effect (key, expiry); an unknown expiry (`None`) counts as the
///   soonest. Ties expire in key order.
/// - `new`: the overrides the write sets (key, expiry), empty for a write of own values. An entry
///   of `in_effect` with the key of a new one is the override it replaces: it is left out, and
///   its old expiry still counts (below).
///
/// The first state is the one where nothing has expired. Without new overrides the states go on
/// until every override has expired. With new ones they stop before the first new one expires
/// (what follows does not depend on the write), but go on at least until each replaced override
/// would have expired: replacing (or shortening) an override that would have outlasted others
/// makes the states between its new expiry and its old one new too.
///
/// ```
/// use std::time::{Duration, SystemTime};
/// use kv_config::overrides::expiry_states;
/// let now = SystemTime::now();
/// let at = |mins: u64| Some(now + Duration::from_secs(60 * mins));
/// let in_effect = [("a", at(10)), ("b", at(20)), ("c", None)];
/// // An own-value write: valid now and as `c` (unknown: soonest), `a`, then `b` expire.
/// let states = expiry_states(&in_effect, &[]);
/// assert_eq!(states, [vec![], vec!["c"], vec!["c", "a"], vec!["c", "a", "b"]]);
/// // A new override of `d` for 15 minutes: the states while it lasts.
/// assert_eq!(expiry_states(&in_effect, &[("d", at(15))]), [vec![], vec!["c"], vec!["c", "a"]]);
/// // `b` shortened to 5 minutes: the states up to its old expiry too (`a` expiring before it).
/// assert_eq!(expiry_states(&in_effect, &[("b", at(5))]), [vec![], vec!["c"], vec!["c", "b"]]);
/// ```
pub fn expiry_states<'a>(in_effect: &[(&'a str, Option<SystemTime>)], new: &[(&'a str, Option<SystemTime>)]) -> Vec<Vec<&'a str>> {
    let is_new = |key: &str| new.iter().any(|(k, _)| *k == key);
    let mut timeline: Vec<(Option<SystemTime>, &'a str)> =
        in_effect.iter().filter(|(k, _)| !is_new(k)).map(|(k, e)| (*e, *k)).chain(new.iter().map(|(k, e)| (*e, *k))).collect();
    timeline.sort_unstable();
    let last = if new.is_empty() {
        timeline.len()
    } else {
        let first_new = timeline.iter().position(|(_, k)| is_new(k)).unwrap_or(timeline.len());
        // Replacing an override that would have outlasted others: the states up to where it
        // would have expired are new too.
        let replaced = in_effect
            .iter()
            .filter(|(k, _)| is_new(k))
            .map(|(key, old)| timeline.iter().filter(|(e, k)| !is_new(k) && (*e, *k) < (*old, *key)).count())
            .max()
            .unwrap_or(0);
        first_new.max(replaced)
    };
    (0..=last).map(|n| timeline[..n].iter().map(|(_, k)| *k).collect()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replaced_override_counts_up_to_its_old_expiry() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let at = |s: u64| Some(now + Duration::from_secs(s));
        let in_effect = [("a", at(10)), ("b", at(20)), ("c", at(30))];
        // `c` replaced by a shorter one at 5: states up to where it would have expired (after
        // `a` and `b`), `c` itself now expiring first.
        assert_eq!(expiry_states(&in_effect, &[("c", at(5))]), [vec![], vec!["c"], vec!["c", "a"]]);
        // Lengthened: only the states before it expires.
        assert_eq!(expiry_states(&in_effect, &[("a", at(25))]), [vec![], vec!["b"]]);
        // Two new overrides: the states stop before the first of them expires.
        assert_eq!(expiry_states(&in_effect, &[("x", at(15)), ("y", at(15))]), [vec![], vec!["a"]]);
        // No overrides at all: one state.
        assert_eq!(expiry_states(&[], &[]), [Vec::<&str>::new()]);
    }
}
