//! A large decode spread over two threads.
//!
//! A start decodes the whole struct after the last entry of the bucket arrived. Until then the
//! server and the client's reader keep both cores of a small machine busy; after it, the server
//! is idle, and the decode (about 170 ns per key: a look-up, a JSON parse, the in-place
//! re-encoding check) runs alone on one core. Here a struct's nested sections, or a map's entries,
//! are shared between the current thread and one more, each decoding into a fork of the
//! [`Decoder`] whose findings are merged back in field order: the config, its errors (same
//! order, same text) and the values it re-encodes exactly are the same as one thread's.
//!
//! Only a fresh decode of at least [`PARALLEL_MIN`] values splits (a thread costs tens of
//! microseconds; an apply of a few changed keys never does), and each split halves the threads
//! left to the forks, so a decode uses at most [`MAX_THREADS`] threads. A config's validators and
//! `Deserialize` impls may therefore run on a thread other than the caller's.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};

use super::{Decoder, KeyError};

/// Fewest values in the bucket (under the prefix) for a decode to use a second thread: below
/// this a decode takes well under a millisecond.
pub(crate) const PARALLEL_MIN: usize = 4096;

/// Most threads one decode uses.
const MAX_THREADS: usize = 4;

/// The stack of a decode thread: reserved, and committed only as far as it is used. A struct
/// is decoded on the stack, and a large plain one (no sections behind `Arc`) needs far more than
/// a thread's default 2 MB (50,000 `String` fields inline are 1.2 MB; see the network
/// benchmark). Where the system cannot give this, the decode stays on one thread.
const STACK: usize = 64 << 20;

/// `0`: not set by [`set_parallel_decode`]; else the setting + 1.
static MIN_SET: AtomicUsize = AtomicUsize::new(0);
static THREADS_SET: AtomicUsize = AtomicUsize::new(0);

/// Overrides when a decode splits (`min_values`) and over how many threads (`threads`, `1`:
/// never), for the whole process; `None` restores the defaults. Used by tests and benchmarks that
/// compare a split decode with one thread's.
#[doc(hidden)]
pub fn set_parallel_decode(setting: Option<(usize, usize)>) {
    let (min, threads) = setting.map_or((0, 0), |(m, t)| (m.saturating_add(1), t.saturating_add(1)));
    MIN_SET.store(min, Ordering::Relaxed);
    THREADS_SET.store(threads, Ordering::Relaxed);
}

fn min_values() -> usize {
    match MIN_SET.load(Ordering::Relaxed) {
        0 => PARALLEL_MIN,
        n => n - 1,
    }
}

/// Sets the most threads one large decode of this process may use, from now on: `1` keeps
/// every decode on the thread that asks for it (for `Deserialize` impls or validators that rely
/// on thread-local state); the default is the machine's cores, at most four. Only decodes of
/// 4,096 keys or more use more than one thread (a start, a bucket read again).
///
/// ```
/// kv_config::set_decode_threads(1);
/// ```
pub fn set_decode_threads(max: usize) {
    let min = MIN_SET.load(Ordering::Relaxed);
    set_parallel_decode(Some((if min == 0 { PARALLEL_MIN } else { min - 1 }, max.max(1))));
}

/// The threads a new decode may use.
pub(super) fn threads() -> usize {
    match THREADS_SET.load(Ordering::Relaxed) {
        0 => {
            static CORES: OnceLock<usize> = OnceLock::new();
            *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, usize::from).min(MAX_THREADS))
        }
        n => n - 1,
    }
}

/// One nested field's result, handed from the thread that decoded it to the one that builds the
/// struct (derived code).
#[doc(hidden)]
pub struct Slot<T>(Mutex<Option<(Option<T>, Vec<KeyError>)>>);

impl<T> Default for Slot<T> {
    fn default() -> Self {
        Slot(Mutex::new(None))
    }
}

impl<T> Slot<T> {
    /// Stores the field's value and the errors found while decoding it (none, or all of them
    /// still in the decoder, when it is not a fork).
    pub fn put(&self, value: Option<T>, d: &mut Decoder<'_>) {
        let errors = if d.fork { std::mem::take(&mut d.errors) } else { Vec::new() };
        *self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some((value, errors));
    }

    /// Takes the field's value, its errors added to `d`'s in field order.
    pub fn take(&self, d: &mut Decoder<'_>) -> Option<T> {
        let taken = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take();
        // Every job ran before its slot is taken (see `Decoder::parallel`); an empty slot would
        // be a bug here, and reads as a field refused with no error, which `decode_with` reports.
        let (value, errors) = taken?;
        d.errors.extend(errors);
        value
    }
}

impl<'a> Decoder<'a> {
    /// Whether a decode here is worth spreading over two threads.
    fn splits(&self, jobs: usize) -> bool {
        jobs >= 2 && self.threads >= 2 && self.changed.is_none() && self.values.len() >= min_values()
    }

    /// A decoder for another thread: the same values, nothing found yet, half the threads.
    fn fork(&self, threads: usize) -> Decoder<'a> {
        let mut d = Decoder::new(self.values, self.source, None);
        d.fork = true;
        d.threads = threads;
        d.secrets.clone_from(&self.secrets);
        d.keep_under.clone_from(&self.keep_under);
        d.elidable = self.elidable.as_ref().map(|_| Vec::new());
        d
    }

    /// Merges what a fork found (other than its errors, which its slots or entries carry).
    fn absorb(&mut self, f: Decoder<'a>) {
        self.errors.extend(f.errors);
        self.hits += f.hits;
        self.secrets.extend(f.secrets);
        if let (Some(mine), Some(theirs)) = (&mut self.elidable, f.elidable) {
            mine.extend(theirs);
        }
        // A position both read was read twice (two fields of one key).
        self.twice.extend(f.twice);
        if self.read.len() < f.read.len() {
            self.read.resize(f.read.len(), 0);
        }
        for (w, (mine, theirs)) in self.read.iter_mut().zip(f.read).enumerate() {
            let mut both = *mine & theirs;
            while both != 0 {
                let bit = both.trailing_zeros();
                self.twice.push((w * 64) as u32 + bit);
                both &= both - 1;
            }
            *mine |= theirs;
        }
    }

    /// Runs `job(i, decoder)` for every nested field `i` (derived code): on two threads, each with
    /// a fork, when the decode is large enough (`true`); otherwise runs nothing and returns
    /// `false`, and the derived code runs each job on this decoder, in field order.
    ///
    /// `weights` (each field's number of leaf keys) order the jobs largest first, and a field
    /// that holds most of the keys is not split here but inside (its own sections).
    #[doc(hidden)]
    pub fn parallel(&mut self, weights: &[usize], job: &(dyn Fn(usize, &mut Decoder<'a>) + Sync)) -> bool {
        let total: usize = weights.iter().sum();
        let largest = weights.iter().copied().max().unwrap_or(0);
        if !self.splits(weights.len()) || largest.saturating_mul(3) > total.saturating_mul(2) {
            return false;
        }
        let mut order: Vec<usize> = (0..weights.len()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(weights[i]));
        let next = AtomicUsize::new(0);
        let work = |d: &mut Decoder<'a>| {
            while let Some(&i) = order.get(next.fetch_add(1, Ordering::Relaxed)) {
                job(i, d);
            }
        };
        let (mine, theirs) = self.run_split(&work, &work);
        self.absorb(mine);
        self.absorb(theirs);
        true
    }

    /// Decodes every entry named in `names` with `entry` (derived code, a map field), in order:
    /// the second half on another thread when the decode is large enough. A `None` is an entry
    /// refused, its errors already in `self`.
    #[doc(hidden)]
    pub fn entries<V: Send>(
        &mut self,
        names: &[String],
        entry: &(dyn Fn(&str, &mut Decoder<'a>) -> Option<V> + Sync),
    ) -> Vec<Option<V>> {
        if !self.splits(names.len()) {
            return names.iter().map(|n| entry(n, self)).collect();
        }
        let (front, back) = names.split_at(names.len() / 2);
        let out: [Mutex<Vec<Option<V>>>; 2] = [Mutex::new(Vec::new()), Mutex::new(Vec::new())];
        let part = |half: &[String], into: &Mutex<Vec<Option<V>>>, d: &mut Decoder<'a>| {
            let decoded = half.iter().map(|n| entry(n, d)).collect();
            *into.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = decoded;
        };
        let (mine, theirs) = self.run_split(&|d| part(front, &out[0], d), &|d| part(back, &out[1], d));
        // The front's errors come first, as one thread would find them.
        self.absorb(mine);
        self.absorb(theirs);
        let [front, back] = out;
        let mut all = front.into_inner().unwrap_or_else(std::sync::PoisonError::into_inner);
        all.extend(back.into_inner().unwrap_or_else(std::sync::PoisonError::into_inner));
        all
    }

    /// Runs `here` on this thread and `there` on a new one, each with a fork; returns the forks.
    /// A panic on the other thread (not user code: that is caught where it runs) is resumed here.
    fn run_split(
        &self,
        here: &(dyn Fn(&mut Decoder<'a>) + Sync),
        there: &(dyn Fn(&mut Decoder<'a>) + Sync),
    ) -> (Decoder<'a>, Decoder<'a>) {
        let (here_threads, there_threads) = (self.threads - self.threads / 2, self.threads / 2);
        let other = || {
            let mut d = self.fork(there_threads);
            there(&mut d);
            d
        };
        let mut mine = self.fork(here_threads);
        let theirs = std::thread::scope(|s| {
            match std::thread::Builder::new().name("kv-config-decode".into()).stack_size(STACK).spawn_scoped(s, other) {
                Ok(handle) => {
                    here(&mut mine);
                    handle.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))
                }
                // No thread to be had: both halves here, in order.
                Err(e) => {
                    tracing::debug!(error = %e, "no thread for a parallel decode; decoding on one");
                    here(&mut mine);
                    other()
                }
            }
        });
        (mine, theirs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{RawValues, Source};

    #[test]
    fn a_position_two_forks_read_is_read_twice_and_every_finding_is_merged() {
        let (values, source) = (RawValues::new(), Source::new("b", ""));
        let mut main = Decoder::new(&values, &source, None);
        main.elidable = Some(vec![1]);
        let mut a = main.fork(1);
        let mut b = main.fork(1);
        for p in [3, 64, 130] {
            a.note_read(p);
        }
        for p in [64, 131] {
            b.note_read(p);
        }
        (a.hits, b.hits) = (2, 3);
        a.elidable.as_mut().unwrap().push(3);
        b.elidable.as_mut().unwrap().push(131);
        b.secrets.push("s".into());
        main.absorb(a);
        main.absorb(b);
        assert_eq!(main.twice, vec![64]);
        assert_eq!(main.hits, 5);
        assert_eq!(main.elidable, Some(vec![1, 3, 131]));
        assert_eq!(main.secrets, vec!["s".to_string()]);
        main.note_read(130);
        assert_eq!(main.twice, vec![64, 130], "a read after the merge sees the forks' reads");
    }

    #[test]
    fn forks_share_the_threads_left_and_never_split_an_apply_or_a_small_decode() {
        let values: RawValues = (0..PARALLEL_MIN)
            .map(|i| (format!("k{i}"), crate::config::RawValue { value: "1".into(), revision: 1, created: None }))
            .collect();
        let source = Source::new("b", "");
        let changed = vec!["k1".to_string()];
        let mut d = Decoder::new(&values, &source, None);
        let mut apply = Decoder::new(&values, &source, Some(&changed));
        (d.threads, apply.threads) = (4, 4);
        assert!(d.splits(2) && !d.splits(1) && !apply.splits(2));
        let (f1, f2) = (d.fork(d.threads - d.threads / 2), d.fork(d.threads / 2));
        assert!(f1.splits(2) && f2.splits(2));
        assert!(!f1.fork(1).splits(2), "a decoder with one thread left never splits");
        let small = RawValues::from_iter(values.into_iter().take(PARALLEL_MIN - 1));
        let mut d = Decoder::new(&small, &source, None);
        d.threads = 4;
        assert!(!d.splits(2));
    }
}
