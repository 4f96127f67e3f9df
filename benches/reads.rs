//! The read path: `LiveConfig::get()` against bare `ArcSwap` and lock baselines, with no writer
//! and with one thread swapping the value 1,000 times a second; then 1, 2 and 4 reader threads
//! reading at once under that writer (on a 2-core machine, 4 readers oversubscribe the cores).
//!
//! `cargo bench --bench reads` (add `-- --quick` for a smoke run).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use criterion::{black_box, criterion_group, criterion_main, Criterion};
use kv_config::store::MemoryStore;
use kv_config::LiveConfig;

#[path = "common/small.rs"]
mod small;
use small::Small as Cfg;

fn initial() -> Cfg {
    Cfg { log_level: "info".into(), port: 8080, counter: 0, timeout_s: 30, features: vec![] }
}

/// Runs `swap` 1,000 times a second on its own thread until dropped.
struct Writer {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Writer {
    fn start(mut swap: impl FnMut(u64) + Send + 'static) -> Writer {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut i = 0;
            while !flag.load(Ordering::Relaxed) {
                i += 1;
                swap(i);
                std::thread::sleep(Duration::from_millis(1));
            }
        });
        Writer { stop, thread: Some(thread) }
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn bench_reads(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("runtime");
    let live = rt
        .block_on(LiveConfig::<Cfg>::builder(MemoryStore::new(), "bench").create_if_missing().start())
        .expect("start LiveConfig on MemoryStore");
    let swap = Arc::new(ArcSwap::from_pointee(initial()));
    let rw = Arc::new(RwLock::new(Arc::new(initial())));
    let mx = Arc::new(Mutex::new(Arc::new(initial())));

    for writer in [false, true] {
        let label = if writer { "1 writer at 1k swaps/s" } else { "no writer" };
        let mut group = c.benchmark_group(format!("read/{label}"));
        {
            let _w = writer.then(|| {
                let live = live.clone();
                let handle = rt.handle().clone();
                Writer::start(move |i| {
                    handle.block_on(live.update(|c| c.counter = i)).expect("update");
                })
            });
            group.bench_function("LiveConfig::get", |b| b.iter(|| black_box(live.get().port)));
            group.bench_function("LiveConfig::get_arc", |b| b.iter(|| black_box(live.get_arc().port)));
        }
        {
            let _w = writer.then(|| {
                let swap = swap.clone();
                Writer::start(move |i| swap.store(Arc::new(Cfg { counter: i, ..initial() })))
            });
            group.bench_function("ArcSwap::load", |b| b.iter(|| black_box(swap.load().port)));
            group.bench_function("ArcSwap::load_full", |b| b.iter(|| black_box(swap.load_full().port)));
        }
        {
            let _w = writer.then(|| {
                let rw = rw.clone();
                Writer::start(move |i| *rw.write().expect("lock") = Arc::new(Cfg { counter: i, ..initial() }))
            });
            group.bench_function("RwLock<Arc<T>> clone", |b| {
                b.iter(|| black_box(rw.read().expect("lock").clone().port))
            });
        }
        {
            let _w = writer.then(|| {
                let mx = mx.clone();
                Writer::start(move |i| *mx.lock().expect("lock") = Arc::new(Cfg { counter: i, ..initial() }))
            });
            group.bench_function("Mutex<Arc<T>> clone", |b| {
                b.iter(|| black_box(mx.lock().expect("lock").clone().port))
            });
        }
        group.finish();
    }
}

/// Time per read as each of `threads` threads sees it: every thread reads `iters` times, all
/// start together, and the slowest thread's time counts.
fn per_thread(threads: usize, iters: u64, read: &(impl Fn() -> u16 + Sync)) -> Duration {
    let start = Barrier::new(threads);
    std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    start.wait();
                    let t = Instant::now();
                    for _ in 0..iters {
                        black_box(read());
                    }
                    t.elapsed()
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().expect("reader thread")).max().unwrap_or_default()
    })
}

fn bench_reader_threads(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("runtime");
    let live = rt
        .block_on(LiveConfig::<Cfg>::builder(MemoryStore::new(), "bench").create_if_missing().start())
        .expect("start LiveConfig on MemoryStore");
    let swap = Arc::new(ArcSwap::from_pointee(initial()));
    let rw = Arc::new(RwLock::new(Arc::new(initial())));
    let mut group = c.benchmark_group("read/N reader threads, 1 writer at 1k swaps/s");
    group.warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
    for threads in [1usize, 2, 4] {
        {
            let live2 = live.clone();
            let handle = rt.handle().clone();
            let _w = Writer::start(move |i| {
                handle.block_on(live2.update(|c| c.counter = i)).expect("update");
            });
            group.bench_function(format!("LiveConfig::get/{threads}"), |b| {
                b.iter_custom(|iters| per_thread(threads, iters, &|| live.get().port))
            });
        }
        {
            let swap2 = swap.clone();
            let _w = Writer::start(move |i| swap2.store(Arc::new(Cfg { counter: i, ..initial() })));
            group.bench_function(format!("ArcSwap::load/{threads}"), |b| {
                b.iter_custom(|iters| per_thread(threads, iters, &|| swap.load().port))
            });
        }
        {
            let rw2 = rw.clone();
            let _w = Writer::start(move |i| *rw2.write().expect("lock") = Arc::new(Cfg { counter: i, ..initial() }));
            group.bench_function(format!("RwLock<Arc<T>> clone/{threads}"), |b| {
                b.iter_custom(|iters| per_thread(threads, iters, &|| rw.read().expect("lock").clone().port))
            });
        }
    }
    group.finish();
}

criterion_group!(benches, bench_reads, bench_reader_threads);
criterion_main!(benches);
