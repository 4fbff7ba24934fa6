//! The audit chain's contract: an intact export verifies; every kind of
//! tampering fails and names the first bad entry; forgetting a person keeps
//! the chain intact.

use super::*;
use serde_json::json;

fn log_with(n: u64) -> (tempfile::TempDir, Arc<Store>, AuditLog) {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(dir.path()).unwrap());
    let log = AuditLog::open(store.clone()).unwrap();
    for i in 1..=n {
        let actor = if i % 2 == 0 {
            Actor::User("alice")
        } else {
            Actor::System("config")
        };
        log.append(
            actor,
            "test.step",
            &format!("target-{i}"),
            json!({ "i": i, "note": "a \"quoted\"\nline" }),
        )
        .unwrap();
    }
    (dir, store, log)
}

fn export_to_string(store: &Store, format: Format) -> String {
    let mut out = Vec::new();
    export(store, format, &mut out).unwrap();
    String::from_utf8(out).unwrap()
}

fn lines(s: &str) -> Vec<String> {
    s.lines().map(str::to_owned).collect()
}

fn check(lines: &[String], head: Option<&str>) -> Result<Verified, VerifyError> {
    verify(lines.join("\n").as_bytes(), head)
}

#[test]
fn an_intact_chain_verifies_in_both_formats() {
    let (_d, store, log) = log_with(6);
    let (seq, hash) = log.head();
    assert_eq!(seq, 6);
    for format in [Format::Jsonl, Format::Csv] {
        let text = export_to_string(&store, format);
        let v = verify(text.as_bytes(), Some(&hash)).unwrap_or_else(|e| panic!("{format:?}: {e}"));
        assert_eq!(
            v,
            Verified {
                entries: 6,
                head_seq: 6,
                head_hash: hash.clone(),
                // alice's three entries carry her name, outside the hash
                unverified_names: 3,
            }
        );
    }
}

#[test]
fn the_chain_continues_across_reopen() {
    let (dir, store, log) = log_with(3);
    drop(log);
    drop(store);
    let store = Arc::new(Store::open(dir.path()).unwrap());
    let log = AuditLog::open(store.clone()).unwrap();
    assert_eq!(log.head().0, 3);
    log.append(Actor::System("x"), "test.more", "t", json!({}))
        .unwrap();
    let text = export_to_string(&store, Format::Jsonl);
    assert_eq!(verify(text.as_bytes(), None).unwrap().entries, 4);
}

#[test]
fn a_changed_field_is_named() {
    let (_d, store, _log) = log_with(5);
    let mut l = lines(&export_to_string(&store, Format::Jsonl));
    l[2] = l[2].replace("target-3", "target-X");
    assert_eq!(
        check(&l, None),
        Err(VerifyError::Altered { line: 3, seq: 3 })
    );
    // CSV too: edit the details column of entry 4.
    let csv = export_to_string(&store, Format::Csv).replace("\"\"i\"\":4", "\"\"i\"\":40");
    let err = verify(csv.as_bytes(), None).unwrap_err();
    assert!(matches!(err, VerifyError::Altered { seq: 4, .. }), "{err}");
}

#[test]
fn an_altered_and_rehashed_entry_is_named() {
    let (_d, store, _log) = log_with(5);
    let mut l = lines(&export_to_string(&store, Format::Jsonl));
    let mut e: Entry = serde_json::from_str(&l[1]).unwrap();
    e.target = "forged".into();
    e.hash = hash_of(&e);
    l[1] = serde_json::to_string(&e).unwrap();
    assert_eq!(
        check(&l, None),
        Err(VerifyError::Relinked {
            line: 2,
            seq: 2,
            next_line: 3
        })
    );
}

#[test]
fn a_deleted_entry_is_named() {
    let (_d, store, _log) = log_with(5);
    let mut l = lines(&export_to_string(&store, Format::Jsonl));
    l.remove(2);
    assert_eq!(
        check(&l, None),
        Err(VerifyError::Removed {
            line: 3,
            seq: 4,
            first: 3,
            last: 3
        })
    );
    let mut l = lines(&export_to_string(&store, Format::Jsonl));
    l.remove(0);
    assert_eq!(
        check(&l, None),
        Err(VerifyError::Removed {
            line: 1,
            seq: 2,
            first: 1,
            last: 1
        })
    );
}

#[test]
fn swapped_entries_are_named() {
    let (_d, store, _log) = log_with(5);
    let mut l = lines(&export_to_string(&store, Format::Jsonl));
    l.swap(2, 3);
    assert_eq!(
        check(&l, None),
        Err(VerifyError::Reordered {
            line: 3,
            seq: 4,
            expected: 3
        })
    );
}

#[test]
fn a_forged_insertion_is_named() {
    let (_d, store, _log) = log_with(5);
    let mut l = lines(&export_to_string(&store, Format::Jsonl));
    // A careful forger: right seq, right link, right hash of its own.
    let before: Entry = serde_json::from_str(&l[1]).unwrap();
    let mut forged = Entry {
        seq: 3,
        time: before.time.clone(),
        actor: "system:config".into(),
        action: "config.load".into(),
        target: "/etc/levee/levee.toml".into(),
        details: json!({}),
        prev_hash: before.hash.clone(),
        hash: String::new(),
    };
    forged.hash = hash_of(&forged);
    l.insert(2, serde_json::to_string(&forged).unwrap());
    assert_eq!(
        check(&l, None),
        Err(VerifyError::Inserted {
            line: 3,
            seq: 3,
            next_line: 4
        })
    );
    // A careless one: a copy of an existing line slipped in.
    let mut l = lines(&export_to_string(&store, Format::Jsonl));
    let copy = l[0].clone();
    l.insert(3, copy);
    assert_eq!(
        check(&l, None),
        Err(VerifyError::Duplicate { line: 4, seq: 1 })
    );
}

#[test]
fn a_truncated_tail_is_caught_by_the_head() {
    let (_d, store, log) = log_with(5);
    let (_, head) = log.head();
    let mut l = lines(&export_to_string(&store, Format::Jsonl));
    l.truncate(3);
    // Without the anchor the shorter chain is consistent …
    assert_eq!(check(&l, None).unwrap().entries, 3);
    // … with it, the cut is found.
    let err = check(&l, Some(&head)).unwrap_err();
    assert!(
        matches!(err, VerifyError::Truncated { seq: 3, .. }),
        "{err}"
    );
    assert!(
        err.to_string().contains("entries after seq 3 were removed"),
        "{err}"
    );
}

#[test]
fn a_chain_past_an_older_head_says_so() {
    let (_d, store, log) = log_with(3);
    let (_, old_head) = log.head();
    log.append(Actor::System("x"), "test.more", "t", json!({}))
        .unwrap();
    let l = lines(&export_to_string(&store, Format::Jsonl));
    assert_eq!(
        check(&l, Some(&old_head)),
        Err(VerifyError::PastHead {
            head_seq: 3,
            seq: 4
        })
    );
}

#[test]
fn garbage_is_unreadable_not_a_panic() {
    for text in ["{not json", "seq,time\n1,2", "{\"seq\":1}\n", ""] {
        let r = verify(text.as_bytes(), None);
        assert!(r.is_err(), "{text:?}");
    }
}

#[test]
fn forgetting_a_person_keeps_the_chain() {
    let (_d, store, log) = log_with(4);
    let before = export_to_string(&store, Format::Jsonl);
    assert!(before.contains("\"actor_name\":\"alice\""));
    assert!(log.forget("alice").unwrap());
    let after = export_to_string(&store, Format::Jsonl);
    assert!(!after.contains("alice"), "{after}");
    let (_, head) = log.head();
    assert_eq!(verify(after.as_bytes(), Some(&head)).unwrap().entries, 4);
    // The hashed content is byte-for-byte what it was.
    let strip = |s: &str| -> Vec<Entry> {
        s.lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    assert_eq!(strip(&before), strip(&after));
    // A returning user gets a new pseudonym: the old entries stay unlinkable.
    let e = log
        .append(Actor::User("alice"), "test.back", "t", json!({}))
        .unwrap();
    assert!(!strip(&before).iter().any(|old| old.actor == e.actor));
}

#[test]
fn the_hashed_content_holds_no_names() {
    let (_d, store, _log) = log_with(2);
    let mut raw = Vec::new();
    for item in store.audit_scan(0) {
        raw.extend(item.unwrap().1);
    }
    assert!(!String::from_utf8_lossy(&raw).contains("alice"));
}

#[test]
fn floats_are_stored_as_strings() {
    let (_d, _store, log) = log_with(0);
    let e = log
        .append(
            Actor::System("x"),
            "t",
            "t",
            json!({ "ratio": 0.25, "n": 3 }),
        )
        .unwrap();
    assert_eq!(e.details, json!({ "ratio": "0.25", "n": 3 }));
}

#[test]
fn the_canonical_form_is_as_documented() {
    let e = Entry {
        seq: 7,
        time: "2026-11-22T12:00:00.000000000Z".into(),
        actor: "system:config".into(),
        action: "config.load".into(),
        target: "/etc/levee/levee.toml".into(),
        details: json!({ "z": 1, "a": "é\n" }),
        prev_hash: GENESIS.into(),
        hash: String::new(),
    };
    let text = String::from_utf8(canonical(&e)).unwrap();
    assert_eq!(
        text,
        format!(
            "[\"levee-audit/1\",7,\"2026-11-22T12:00:00.000000000Z\",\"system:config\",\"config.load\",\
             \"/etc/levee/levee.toml\",{{\"a\":\"é\\n\",\"z\":1}},\"{GENESIS}\"]"
        )
    );
}

#[test]
fn a_listing_filters_pages_and_names_people() {
    let (_d, store, _log) = log_with(6);
    let seqs = |f: &Filter| -> (Vec<u64>, Option<u64>) {
        let page = list(&store, f).unwrap();
        (
            page.entries.iter().map(|e| e.entry.seq).collect(),
            page.next,
        )
    };
    // Newest first by default; a full page says where the next starts.
    let f = Filter {
        limit: 4,
        ..Filter::default()
    };
    assert_eq!(seqs(&f), (vec![6, 5, 4, 3], Some(3)));
    let f = Filter { before_seq: 3, ..f };
    assert_eq!(seqs(&f), (vec![2, 1], None));
    // Oldest first from a seq.
    let f = Filter {
        after_seq: 4,
        newest_first: false,
        ..Filter::default()
    };
    assert_eq!(seqs(&f), (vec![5, 6], None));
    // A page that ends exactly at the end of the range has no next.
    let f = Filter {
        after_seq: 4,
        newest_first: false,
        limit: 2,
        ..Filter::default()
    };
    assert_eq!(seqs(&f), (vec![5, 6], None));
    // By actor, action prefix and target.
    let f = Filter {
        actor: Some("system:config".into()),
        ..Filter::default()
    };
    assert_eq!(seqs(&f).0, [5, 3, 1]);
    let f = Filter {
        action: Some("test.".into()),
        target: Some("target-2".into()),
        ..Filter::default()
    };
    assert_eq!(seqs(&f).0, [2]);
    let f = Filter {
        action: Some("config.".into()),
        ..Filter::default()
    };
    assert!(seqs(&f).0.is_empty());
    // The scan bound ends a selective page early, with a place to go on.
    let f = Filter {
        target: Some("target-1".into()),
        scan: 3,
        ..Filter::default()
    };
    assert_eq!(seqs(&f), (vec![], Some(4)));
    // By time: since inclusive, until exclusive.
    let all = list(&store, &Filter::default()).unwrap().entries;
    let time = |seq: u64| {
        let e = all.iter().find(|e| e.entry.seq == seq).unwrap();
        humantime::parse_rfc3339(&e.entry.time).unwrap()
    };
    for newest_first in [true, false] {
        let f = Filter {
            since: Some(time(2)),
            until: Some(time(5)),
            newest_first,
            ..Filter::default()
        };
        let mut got = seqs(&f).0;
        got.sort_unstable();
        assert_eq!(got, [2, 3, 4], "newest_first {newest_first}");
    }
    // People are named while their identity is kept.
    let alice = all.iter().find(|e| e.entry.seq == 2).unwrap();
    assert!(alice.entry.actor.starts_with("user:"));
    assert_eq!(alice.actor_name.as_deref(), Some("alice"));
    assert_eq!(
        all.iter().find(|e| e.entry.seq == 1).unwrap().actor_name,
        None
    );
}

#[test]
fn a_field_the_hash_does_not_cover_is_refused_or_marked() {
    let (_d, store, log) = log_with(2);
    let (_, hash) = log.head();
    let text = export_to_string(&store, Format::Jsonl);
    // Every exported entry says which of its fields its hash does not cover.
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(v["unverified"], json!(["actor_name"]), "{line}");
    }
    // A name set after the fact is unverified, and verify says so…
    let named = text.replace("\"actor_name\":null", "\"actor_name\":\"mallory\"");
    let v = verify(named.as_bytes(), Some(&hash)).unwrap();
    assert_eq!(v.unverified_names, 2);
    // … a field nobody knows is refused rather than passed unchecked.
    let added = text.replacen("{\"seq\"", "{\"approved_by\":\"ceo\",\"seq\"", 1);
    let e = verify(added.as_bytes(), Some(&hash)).unwrap_err();
    assert!(e.to_string().contains("field `approved_by`"), "{e}");
    let csv = export_to_string(&store, Format::Csv);
    let more = csv.replacen(
        "actor_name,unverified",
        "actor_name,unverified,approved_by",
        1,
    );
    assert!(verify(more.as_bytes(), Some(&hash)).is_err());
}

#[test]
fn a_state_change_and_its_entry_are_written_together_or_not_at_all() {
    let (_d, store, log) = log_with(1);
    log.append_with(Actor::System("t"), "test.with", "k", json!({}), |b| {
        b.meta_put("test_state", b"v1")
    })
    .unwrap();
    assert_eq!(
        store.meta_get("test_state").unwrap().as_deref(),
        Some(&b"v1"[..])
    );
    assert_eq!(log.head().0, 2);
    // A write that fails writes neither: here the store is gone read-only
    // under the log (a failure RocksDB itself reports).
    let ro = Arc::new(Store::open_read_only(store.data_dir()).unwrap());
    let ro_log = AuditLog::open(ro.clone()).unwrap();
    assert!(ro_log
        .append_with(Actor::System("t"), "test.with", "k", json!({}), |b| {
            b.meta_put("test_state", b"v2")
        })
        .is_err());
    assert_eq!(
        store.meta_get("test_state").unwrap().as_deref(),
        Some(&b"v1"[..])
    );
    assert_eq!(log.head().0, 2);
    assert!(verify_stored(&store).is_ok());
}

#[test]
fn secrets_are_hashed_with_a_key_of_the_store() {
    let (dir, store, log) = log_with(0);
    let a = log.secret_mac("\"token-one\"");
    assert_eq!(a.len(), 32);
    assert_eq!(a, log.secret_mac("\"token-one\""));
    assert_ne!(a, log.secret_mac("\"token-two\""));
    // Not the plain SHA-256 of the value, and the same after a reopen.
    assert!(!hex::encode(Sha256::digest(b"\"token-one\"")).starts_with(&a));
    drop(log);
    drop(store);
    let store = Arc::new(Store::open(dir.path()).unwrap());
    let log = AuditLog::open(store).unwrap();
    assert_eq!(log.secret_mac("\"token-one\""), a);
}
