//! `watchtrie::WatchConfig` is the reference's `watch::WatchConfig`: the same fields, the
//! same defaults, and the same settings refused by `validate`, with the same messages.
use d_engine_core::watch::WatchConfig as Reference;
use watchtrie::WatchConfig;

fn fields(c: &Reference) -> (usize, usize, bool, usize, u64) {
    (
        c.event_queue_size,
        c.watcher_buffer_size,
        c.enable_metrics,
        c.max_watcher_count,
        c.heartbeat_interval_ms,
    )
}

fn ours(c: &WatchConfig) -> (usize, usize, bool, usize, u64) {
    (
        c.event_queue_size,
        c.watcher_buffer_size,
        c.enable_metrics,
        c.max_watcher_count,
        c.heartbeat_interval_ms,
    )
}

#[test]
fn the_defaults_are_the_references() {
    assert_eq!(ours(&WatchConfig::default()), fields(&Reference::default()));
}

#[test]
fn validate_refuses_what_the_reference_refuses_with_its_message() {
    let cases = [(0, 256), (10_240, 0), (0, 0), (1, 1), (200_000, 5_000)];
    for (event_queue_size, watcher_buffer_size) in cases {
        let reference = Reference {
            event_queue_size,
            watcher_buffer_size,
            ..Reference::default()
        };
        let watchtrie = WatchConfig {
            event_queue_size,
            watcher_buffer_size,
            ..WatchConfig::default()
        };
        match (reference.validate(), watchtrie.validate()) {
            (Ok(()), Ok(())) => {}
            (Err(theirs), Err(mine)) => {
                let (theirs, mine) = (theirs.to_string(), mine.to_string());
                assert!(theirs.contains(&mine), "{theirs:?} vs {mine:?}");
            }
            (theirs, mine) => {
                panic!("({event_queue_size}, {watcher_buffer_size}): {theirs:?} vs {mine:?}")
            }
        }
    }
}

#[test]
fn a_toml_table_loads_into_the_same_config_missing_fields_taking_their_defaults() {
    let tables = [
        "",
        "watcher_buffer_size = 8",
        "event_queue_size = 100\nmax_watcher_count = 5\nheartbeat_interval_ms = 0\nenable_metrics = true",
    ];
    for table in tables {
        let reference: Reference = toml::from_str(table).unwrap();
        let watchtrie: WatchConfig = toml::from_str(table).unwrap();
        assert_eq!(ours(&watchtrie), fields(&reference), "{table:?}");
        let again: WatchConfig = toml::from_str(&toml::to_string(&watchtrie).unwrap()).unwrap();
        assert_eq!(again, watchtrie);
    }
}
