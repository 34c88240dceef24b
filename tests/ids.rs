//! Rule 1 of docs/CONTRACT.md: ids start at 1 and count every successful registration, exact and
//! prefix alike; a failed registration takes no id.
mod common;
use common::*;

in_both_modes! {
    async fn ids_are_consecutive_across_exact_and_prefix(mode) {
        let bed = Bed::new(mode, 4, usize::MAX);
        let r = &bed.registry;
        let ids: Vec<u64> = vec![
            r.register(b("/a"), false).unwrap().id(),
            r.register_prefix(b("/a/"), true).unwrap().id(),
            r.register(b("/a"), true).unwrap().id(),
            r.register_prefix(b("/"), false).unwrap().id(),
        ];
        assert_eq!(ids, vec![1, 2, 3, 4]);
    }

    async fn failed_registrations_take_no_id(mode) {
        let mut bed = Bed::new(mode, 4, 1);
        let first = bed.registry.register(b("/k"), false).unwrap();
        assert_eq!(first.id(), 1);
        assert!(bed.registry.register_prefix(b("bad"), false).is_err());
        assert!(bed.registry.register(b("/k"), false).is_err());
        drop(first);
        bed.settle().await;
        assert_eq!(bed.registry.register(b("/k"), false).unwrap().id(), 2);
    }
}
