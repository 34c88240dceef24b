//! Deterministic workloads: hierarchical keys, watcher sets and event streams from a seed.

use bytes::Bytes;
use std::collections::HashSet;

/// SplitMix64: small, fast, and the same sequence on every machine for a seed.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator for `seed`.
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }
}

/// Names and fan-out of each level of the key hierarchy `/svc<a>/node<b>/part<c>/k<d>/x<e>…`.
const LEVELS: [(&str, u64); 8] = [
    ("svc", 32),
    ("node", 256),
    ("part", 64),
    ("k", 64),
    ("x", 16),
    ("y", 16),
    ("z", 16),
    ("w", 16),
];

/// A key of `depth` segments drawn from the hierarchy (depth 1..=8).
pub fn random_key(rng: &mut Rng, depth: usize, top: &str) -> String {
    let mut key = String::with_capacity(64);
    for (level, (name, fanout)) in LEVELS.iter().enumerate().take(depth) {
        key.push('/');
        key.push_str(if level == 0 { top } else { name });
        key.push_str(&rng.below(*fanout).to_string());
    }
    key
}

/// The set of watched keys and the stream of event keys for one run.
#[derive(Clone, Debug, Default)]
pub struct Workload {
    /// Keys of exact watchers (distinct).
    pub exact: Vec<Bytes>,
    /// Prefixes of prefix watchers (distinct, each starting and ending with `/`).
    pub prefixes: Vec<Bytes>,
    /// Keys of the events, in order.
    pub events: Vec<Bytes>,
}

impl Workload {
    /// Watchers of all kinds.
    pub fn watcher_count(&self) -> usize {
        self.exact.len() + self.prefixes.len()
    }

    /// Every watcher as a watchtrie watch description: the exact keys, then the prefixes.
    pub fn specs(&self) -> impl Iterator<Item = watchtrie::WatchSpec> + '_ {
        let exact = self
            .exact
            .iter()
            .map(|k| watchtrie::WatchSpec::exact(k.clone()));
        let prefixes = self
            .prefixes
            .iter()
            .map(|p| watchtrie::WatchSpec::prefix(p.clone()));
        exact.chain(prefixes)
    }
}

fn distinct(count: usize, rng: &mut Rng, mut make: impl FnMut(&mut Rng) -> String) -> Vec<Bytes> {
    let mut seen = HashSet::with_capacity(count);
    let mut out = Vec::with_capacity(count);
    let mut attempts = 0usize;
    while out.len() < count {
        attempts += 1;
        assert!(
            attempts < count * 20 + 1000,
            "key space too small for {count} distinct keys"
        );
        let key = make(rng);
        if seen.insert(key.clone()) {
            out.push(Bytes::from(key));
        }
    }
    out
}

/// `mixed`: exact watchers on keys of depth 4–8, prefix watchers on the depth-2 prefixes of
/// the first 16 services plus depth-3 prefixes; half the events hit a watched key, 40% are
/// random keys of the 32 services (under a watched prefix for about half of them: the 16
/// services' depth-2 prefixes, and a few depth-3 ones), 10% fall outside every watched
/// subtree. (So about 22% of all events land under a prefix without an exact watcher, and
/// about 28% under none, at 500,000 watchers.)
pub fn mixed(exact: usize, prefixes: usize, events: usize, seed: u64) -> Workload {
    let mut rng = Rng::new(seed);
    let exact_keys = distinct(exact, &mut rng, |r| {
        let depth = 4 + r.below(5) as usize;
        random_key(r, depth, "svc")
    });
    let depth2 = prefixes.min(16 * 256);
    let mut prefix_keys = Vec::with_capacity(prefixes);
    'outer: for svc in 0..16 {
        for node in 0..256 {
            if prefix_keys.len() == depth2 {
                break 'outer;
            }
            prefix_keys.push(Bytes::from(format!("/svc{svc}/node{node}/")));
        }
    }
    let deeper = distinct(prefixes - depth2, &mut rng, |r| {
        format!("{}/", random_key(r, 3, "svc"))
    });
    prefix_keys.extend(deeper);
    let events = (0..events)
        .map(|_| match rng.below(10) {
            0..=4 => exact_keys[rng.below(exact_keys.len() as u64) as usize].clone(),
            5..=8 => {
                let depth = 4 + rng.below(5) as usize;
                Bytes::from(random_key(&mut rng, depth, "svc"))
            }
            _ => {
                let depth = 4 + rng.below(5) as usize;
                Bytes::from(random_key(&mut rng, depth, "other"))
            }
        })
        .collect();
    Workload {
        exact: exact_keys,
        prefixes: prefix_keys,
        events,
    }
}

/// `miss`: `watchers` exact watchers (10% of them prefix watchers on depth-3 prefixes) and
/// events on keys nobody watches, under a top level no prefix covers.
pub fn miss(watchers: usize, events: usize, seed: u64) -> Workload {
    let mut rng = Rng::new(seed);
    let prefixes = watchers / 10;
    let exact = distinct(watchers - prefixes, &mut rng, |r| random_key(r, 6, "svc"));
    let prefix_keys = distinct(prefixes, &mut rng, |r| {
        format!("{}/", random_key(r, 3, "svc"))
    });
    let events = (0..events)
        .map(|_| Bytes::from(random_key(&mut rng, 6, "other")))
        .collect();
    Workload {
        exact,
        prefixes: prefix_keys,
        events,
    }
}

/// `deep`: `watchers` prefix watchers spread along depth-8 paths (at every depth 1–8) and
/// events on depth-8 keys; most events pass several watched prefixes.
pub fn deep(watchers: usize, events: usize, seed: u64) -> Workload {
    let mut rng = Rng::new(seed);
    let prefixes = distinct(watchers, &mut rng, |r| {
        let depth = 1 + r.below(8) as usize;
        format!("{}/", random_key(r, depth, "svc"))
    });
    let events = (0..events)
        .map(|_| Bytes::from(random_key(&mut rng, 8, "svc")))
        .collect();
    Workload {
        exact: Vec::new(),
        prefixes,
        events,
    }
}
