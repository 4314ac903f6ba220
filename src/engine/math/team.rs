//! A team of persistent threads for work too small for rayon: one image's layer products
//! (tens of microseconds), where waking pool threads costs as much as the arithmetic.
//!
//! [`Team::run`] calls `f(part)` for every part `0..parts()` at once, the caller taking part
//! 0, and returns when all are done. The same part always goes to the same thread, so a layer
//! split by columns keeps each core reading the same block of weights, which then stays in
//! that core's caches between calls. Workers spin briefly after a job (the next call of a
//! burst finds them awake) and then park, so an idle server burns no CPU.
//!
//! Every part is claimed once per job, by its worker or by the caller: after its own part the
//! caller claims and runs the parts no worker has started (a worker still waking up, or
//! descheduled on a busy machine), so a job never waits for a sleeping thread. One job runs at
//! a time; a caller that finds the team busy runs every part itself, in order. Either way each
//! part computes the same thing, so results do not depend on who ran them.

use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::thread::Thread;
use std::time::{Duration, Instant};

/// How long a worker stays awake after a job before it parks.
const SPIN: Duration = Duration::from_micros(200);
/// Most threads a team uses (parts beyond the cores would only wait).
const MAX_PARTS: usize = 8;

type Job = &'static (dyn Fn(usize) + Sync);

struct Shared {
    /// The current job and its generation.
    job: Mutex<Option<(u64, Job)>>,
    generation: AtomicU64,
    /// The last generation for which each part was claimed.
    claimed: Vec<AtomicU64>,
    remaining: AtomicUsize,
    panicked: AtomicBool,
    parked: Vec<AtomicBool>,
    threads: OnceLock<Vec<Thread>>,
}

/// The team; see the module documentation.
pub struct Team {
    shared: &'static Shared,
    running: Mutex<()>,
    parts: usize,
}

impl Team {
    /// The process's team: one thread per core (at most [`MAX_PARTS`]), started on first use.
    pub fn global() -> &'static Team {
        static TEAM: OnceLock<Team> = OnceLock::new();
        TEAM.get_or_init(|| {
            let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
            Team::new(cores.clamp(1, MAX_PARTS))
        })
    }

    /// A team of `parts` parts: the caller and `parts − 1` threads that live as long as the
    /// process (the team is leaked; make one per process, as [`Team::global`] does).
    pub fn new(parts: usize) -> Team {
        let parts = parts.max(1);
        let shared: &'static Shared = Box::leak(Box::new(Shared {
            job: Mutex::new(None),
            generation: AtomicU64::new(0),
            remaining: AtomicUsize::new(0),
            panicked: AtomicBool::new(false),
            parked: (0..parts).map(|_| AtomicBool::new(false)).collect(),
            claimed: (0..parts).map(|_| AtomicU64::new(0)).collect(),
            threads: OnceLock::new(),
        }));
        let mut threads = Vec::new();
        for part in 1..parts {
            let spawned = std::thread::Builder::new()
                .name(format!("dbn-team-{part}"))
                .spawn(move || work(shared, part));
            match spawned {
                Ok(handle) => threads.push(handle.thread().clone()),
                // Without its threads the team still works: the caller runs every part.
                Err(_) => {
                    return Team {
                        shared,
                        running: Mutex::new(()),
                        parts: 1,
                    }
                }
            }
        }
        let _ = shared.threads.set(threads);
        Team {
            shared,
            running: Mutex::new(()),
            parts,
        }
    }

    /// Parts of every job (threads, the caller included).
    pub fn parts(&self) -> usize {
        self.parts
    }

    /// Calls `f(part)` for every part in `0..parts()`, in parallel when the team is free.
    /// A panic in any part is raised again here once all parts have ended.
    pub fn run(&self, f: &(dyn Fn(usize) + Sync)) {
        let guard = match self.running.try_lock() {
            Ok(guard) if self.parts > 1 => guard,
            _ => {
                (0..self.parts).for_each(f);
                return;
            }
        };
        let sh = self.shared;
        // SAFETY: the reference is erased to 'static only while this call runs: a worker calls
        // it only after claiming a part of this generation, every claimed part is counted in
        // `remaining`, and this function waits for `remaining` to reach zero and clears the
        // job before it returns (panics in parts are caught and raised after that).
        let job: Job = unsafe { std::mem::transmute::<&(dyn Fn(usize) + Sync), Job>(f) };
        let generation = sh.generation.load(Ordering::SeqCst) + 1;
        *sh.job.lock().unwrap_or_else(|p| p.into_inner()) = Some((generation, job));
        sh.panicked.store(false, Ordering::SeqCst);
        sh.remaining.store(self.parts - 1, Ordering::SeqCst);
        sh.generation.store(generation, Ordering::SeqCst);
        if let Some(threads) = sh.threads.get() {
            for (part, thread) in (1..).zip(threads) {
                if sh.parked[part].load(Ordering::SeqCst) {
                    thread.unpark();
                }
            }
        }
        let mut mine = catch_unwind(AssertUnwindSafe(|| f(0)));
        for part in 1..self.parts {
            if sh.claimed[part].fetch_max(generation, Ordering::SeqCst) < generation {
                let run = catch_unwind(AssertUnwindSafe(|| f(part)));
                if mine.is_ok() {
                    mine = run;
                }
                sh.remaining.fetch_sub(1, Ordering::AcqRel);
            }
        }
        let started = Instant::now();
        while sh.remaining.load(Ordering::Acquire) != 0 {
            if started.elapsed() < SPIN {
                std::hint::spin_loop();
            } else {
                // A worker was descheduled mid-part (the cores are busy): do not hold a core.
                std::thread::yield_now();
            }
        }
        *sh.job.lock().unwrap_or_else(|p| p.into_inner()) = None;
        let theirs = sh.panicked.load(Ordering::SeqCst);
        drop(guard);
        if let Err(panic) = mine {
            resume_unwind(panic);
        }
        if theirs {
            panic!("a part of a team job panicked");
        }
    }
}

impl Team {
    /// Runs `f(part, input)` with `inputs[part]` for every part (see [`Team::run`]) and returns
    /// the parts' results in part order. `inputs` has one entry per part.
    pub fn map<T: Send, R: Send>(
        &self,
        inputs: Vec<T>,
        f: impl Fn(usize, T) -> R + Sync,
    ) -> Vec<R> {
        assert_eq!(inputs.len(), self.parts, "one input per part");
        let slots: Vec<Mutex<(Option<T>, Option<R>)>> = inputs
            .into_iter()
            .map(|input| Mutex::new((Some(input), None)))
            .collect();
        self.run(&|part| {
            let mut slot = slots[part].lock().unwrap_or_else(|p| p.into_inner());
            if let Some(input) = slot.0.take() {
                slot.1 = Some(f(part, input));
            }
        });
        slots
            .into_iter()
            .map(|slot| {
                let (_, result) = slot.into_inner().unwrap_or_else(|p| p.into_inner());
                result.expect("every part ran")
            })
            .collect()
    }
}

/// A worker: waits for each new generation, runs its part, counts itself done.
fn work(sh: &'static Shared, part: usize) {
    let mut seen = 0;
    loop {
        let mut awake_since = Instant::now();
        let mut spins = 0u32;
        loop {
            let generation = sh.generation.load(Ordering::Acquire);
            if generation != seen {
                seen = generation;
                break;
            }
            spins = spins.wrapping_add(1);
            if spins.is_multiple_of(64) && awake_since.elapsed() > SPIN {
                sh.parked[part].store(true, Ordering::SeqCst);
                if sh.generation.load(Ordering::SeqCst) == seen {
                    std::thread::park();
                }
                sh.parked[part].store(false, Ordering::SeqCst);
                awake_since = Instant::now();
            }
            std::hint::spin_loop();
        }
        let job = *sh.job.lock().unwrap_or_else(|p| p.into_inner());
        // A job whose part the caller already claimed may have returned: its closure is used
        // only after this worker wins the claim, which keeps the caller waiting for it.
        if let Some((generation, f)) = job {
            if sh.claimed[part].fetch_max(generation, Ordering::SeqCst) < generation {
                if catch_unwind(AssertUnwindSafe(|| f(part))).is_err() {
                    sh.panicked.store(true, Ordering::SeqCst);
                }
                sh.remaining.fetch_sub(1, Ordering::AcqRel);
            }
        }
    }
}

/// Splits `0..n` into `parts` contiguous ranges whose starts are multiples of `align`
/// (the last may be short; trailing ones may be empty).
pub fn split(n: usize, parts: usize, align: usize) -> impl Iterator<Item = std::ops::Range<usize>> {
    let align = align.max(1);
    let block = n.div_ceil(parts.max(1)).div_ceil(align) * align;
    (0..parts.max(1)).map(move |p| (p * block).min(n)..((p + 1) * block).min(n))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_part_runs_once_per_job_on_its_worker_or_the_caller() {
        let team = Team::new(3);
        for round in 0..200 {
            let hits: Vec<AtomicUsize> = (0..3).map(|_| AtomicUsize::new(0)).collect();
            let names: Vec<Mutex<String>> = (0..3).map(|_| Mutex::new(String::new())).collect();
            team.run(&|part| {
                hits[part].fetch_add(round + 1, Ordering::SeqCst);
                *names[part].lock().unwrap() = std::thread::current()
                    .name()
                    .unwrap_or("caller")
                    .to_string();
            });
            for (part, h) in hits.iter().enumerate() {
                assert_eq!(h.load(Ordering::SeqCst), round + 1, "part {part}");
            }
            // Each part ran on its own worker, or on the caller when the worker was late.
            let caller = std::thread::current()
                .name()
                .unwrap_or("caller")
                .to_string();
            for part in 1..3 {
                let ran_on = names[part].lock().unwrap().clone();
                assert!(
                    ran_on == format!("dbn-team-{part}") || ran_on == caller,
                    "part {part} ran on {ran_on}"
                );
            }
            if round % 50 == 0 {
                // Let the workers park, so the next job must wake them.
                std::thread::sleep(Duration::from_millis(2));
            }
        }
    }

    #[test]
    fn a_busy_team_runs_every_part_on_the_caller() {
        let team = std::sync::Arc::new(Team::new(2));
        let total = AtomicUsize::new(0);
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for _ in 0..500 {
                        team.run(&|part| {
                            total.fetch_add(part + 1, Ordering::SeqCst);
                        });
                    }
                });
            }
        });
        assert_eq!(total.load(Ordering::SeqCst), 4 * 500 * (1 + 2));
    }

    #[test]
    fn a_panicking_part_is_raised_in_the_caller_and_the_team_goes_on() {
        let team = Team::new(2);
        let result = catch_unwind(AssertUnwindSafe(|| {
            team.run(&|part| assert_ne!(part, 1, "part one fails"));
        }));
        assert!(result.is_err());
        let ran = AtomicUsize::new(0);
        team.run(&|_| {
            ran.fetch_add(1, Ordering::SeqCst);
        });
        assert_eq!(ran.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn map_hands_each_part_its_input_and_returns_results_in_part_order() {
        let team = Team::new(3);
        let got = team.map(vec![10, 20, 30], |part, input| input + part);
        assert_eq!(got, vec![10, 21, 32]);
    }

    #[test]
    fn split_covers_the_range_with_aligned_starts() {
        let ranges: Vec<_> = split(500, 2, 16).collect();
        assert_eq!(ranges, vec![0..256, 256..500]);
        let ranges: Vec<_> = split(10, 4, 16).collect();
        assert_eq!(ranges, vec![0..10, 10..10, 10..10, 10..10]);
        assert_eq!(split(0, 3, 1).filter(|r| !r.is_empty()).count(), 0);
    }
}
