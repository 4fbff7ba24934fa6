//! The config loader's contract: the exact position and message of each kind
//! of mistake, and that the documented example matches the built-in defaults.

use super::*;

const HG: &str = "[[hostgroup]]\nname = \"a\"\nprefixes = [\"192.0.2.0/24\"]\n";

/// `LINE:COL: message` of every error in `text`, in order.
fn errors(text: &str) -> Vec<String> {
    match parse(Path::new("t.toml"), text) {
        Ok(_) => Vec::new(),
        Err(e) => e
            .errors
            .iter()
            .map(|e| format!("{}:{}: {}", e.line, e.col, e.message))
            .collect(),
    }
}

#[test]
fn broken_configs_give_exact_positions_and_messages() {
    let cases: &[(&str, String, &[&str])] = &[
        (
            "syntax error",
            "[web]\nlisten = \"127.0.0.1:8080\n".to_owned(),
            &["2:25: TOML syntax: invalid basic string, expected `\"`"],
        ),
        (
            "unknown key, with a suggestion",
            format!("{HG}[hostgroup.thresholds]\nppss = 10\n"),
            &["5:1: unknown key `ppss` in [hostgroup.thresholds]; did you mean `pps`?"],
        ),
        (
            "unknown table, with a suggestion",
            "[webb]\nlisten = \"127.0.0.1:8080\"\n".to_owned(),
            &["1:2: unknown key `webb`; did you mean `web`?"],
        ),
        (
            "a word that is none of a key's words",
            format!("[mitigation]\nwithout_evidence = \"x\"\n{HG}[hostgroup.mitigation]\nunknown_collateral = \"y\"\n"),
            &[
                "2:20: `without_evidence` in [mitigation] is \"wait\" or \"next_level\", not \"x\"",
                "7:22: `unknown_collateral` in [hostgroup.mitigation] is \"accept\" or \"refuse\", not \"y\"",
            ],
        ),
        (
            "a rollback policy that is neither",
            format!("{HG}[hostgroup.mitigation]\nrollback_unknown = \"drop\"\n"),
            &["5:20: `rollback_unknown` in [hostgroup.mitigation] is \"keep\" or \"withdraw\", not \"drop\""],
        ),
        (
            "a next hop of the wrong family",
            "[bgp]\nnext_hop = \"100::1\"\nnext_hop6 = \"192.0.2.1\"\n".to_owned(),
            &[
                "2:12: `next_hop` in [bgp] must be an IPv4 address, not 100::1",
                "3:13: `next_hop6` in [bgp] must be an IPv6 address, not 192.0.2.1",
            ],
        ),
        (
            "bad communities",
            "[scrubbing]\ncommunities = [\"65000:1\", \"65000\", \"70000:1\"]\n".to_owned(),
            &[
                "2:27: community `65000` is not ASN:VALUE",
                "2:36: community `70000:1`: `70000` is not a 16-bit number",
            ],
        ),
        (
            "a shortest prefix longer than the family",
            "[mitigation]\nshortest_prefix_v4 = 33\nnever = [\"192.0.2.1\"]\n".to_owned(),
            &["2:22: `shortest_prefix_v4` in [mitigation] must be between 1 and 32"],
        ),
        (
            "an upstream without a neighbour, and one with a bad community",
            "[[bgp.upstream]]\nname = \"a\"\n[[bgp.upstream]]\nname = \"b\"\nneighbor = \"192.0.2.1\"\nblackhole_community = \"666\"\n".to_owned(),
            &[
                "1:1: [[bgp.upstream]] needs a `neighbor`",
                "6:23: community `666` is not ASN:VALUE",
            ],
        ),
        (
            "a FlowSpec action without what completes it",
            format!("{HG}[hostgroup.mitigation]\nflowspec_action = \"redirect\"\n"),
            &["5:19: flowspec_action `redirect` needs `flowspec_redirect` in [hostgroup.mitigation]"],
        ),
        (
            "unknown key, nothing close",
            "colour = \"blue\"\n".to_owned(),
            &["1:1: unknown key `colour`"],
        ),
        (
            "bad prefix",
            "[[hostgroup]]\nname = \"a\"\nprefixes = [\"192.0.2.0/33\"]\n".to_owned(),
            &["3:13: `192.0.2.0/33` is not an IP prefix (write e.g. 192.0.2.0/24 or 2001:db8::/48)"],
        ),
        (
            "prefix with host bits",
            "[[hostgroup]]\nname = \"a\"\nprefixes = [\"10.0.0.0/8\", \"192.0.2.1/24\"]\n".to_owned(),
            &["3:27: prefix 192.0.2.1/24 has host bits set; did you mean 192.0.2.0/24?"],
        ),
        (
            "overlapping hostgroups",
            format!("{HG}[[hostgroup]]\nname = \"b\"\nprefixes = [\"192.0.2.128/25\"]\n"),
            &["6:13: prefix 192.0.2.128/25 of hostgroup `b` overlaps 192.0.2.0/24 of hostgroup `a`; \
               set within = \"a\" in `b` to carve it out"],
        ),
        (
            "the same prefix in two hostgroups",
            format!("{HG}[[hostgroup]]\nname = \"b\"\nprefixes = [\"192.0.2.0/24\"]\n"),
            &["6:13: prefix 192.0.2.0/24 is in both hostgroup `a` and hostgroup `b`"],
        ),
        (
            "bad port",
            "[web]\nlisten = \"127.0.0.1:99999\"\n".to_owned(),
            &["2:10: invalid address in `listen` in [web]: `127.0.0.1:99999`: port 99999 is out of range (0-65535)"],
        ),
        (
            "negative threshold",
            format!("{HG}[hostgroup.thresholds]\npps = -5\n"),
            &["5:7: `pps` in [hostgroup.thresholds] must be a positive integer, got -5"],
        ),
        (
            "zero threshold",
            format!("{HG}[hostgroup.thresholds]\nbps = 0\n"),
            &["5:7: `bps` in [hostgroup.thresholds] must be a positive integer, got 0"],
        ),
        (
            "wrong type",
            "[mitigation]\ndry_run = \"yes\"\n".to_owned(),
            &["2:11: `dry_run` in [mitigation] must be true or false, found a string"],
        ),
        (
            "bad duration",
            "[mitigation]\nhold_down = \"5 parsecs\"\n".to_owned(),
            &["2:13: `hold_down` in [mitigation] is not a duration (`5 parsecs`: unknown time unit \"parsecs\", \
               supported units: ns, us/µs, ms, sec, min, hours, days, weeks, months, years (and few variations)); \
               write e.g. \"30s\", \"5m\", \"1h\""],
        ),
        (
            "misspelt ladder level",
            format!("{HG}[hostgroup.mitigation]\nladder = [\"flowspec\", \"rtbhh\"]\n"),
            &["5:23: unknown mitigation level `rtbhh`; did you mean `rtbh`?"],
        ),
        (
            "ladder out of order",
            format!("{HG}[hostgroup.mitigation]\nladder = [\"rtbh\", \"flowspec\"]\n"),
            &["5:19: mitigation level `flowspec` comes after `rtbh`; the ladder goes firewall, flowspec, rtbh, scrubbing"],
        ),
        (
            "two collectors on one port",
            "[collector.sflow]\nlisten = [\"0.0.0.0:2055\"]\n".to_owned(),
            &["2:11: [collector.sflow] listen `0.0.0.0:2055` clashes with `0.0.0.0:2055` of [collector.netflow] listen (default)"],
        ),
        (
            "two listeners of one collector on one port",
            "[collector.netflow]\nlisten = [\"0.0.0.0:2055\", \"127.0.0.1:2055\"]\n".to_owned(),
            &["2:27: [collector.netflow] listen `127.0.0.1:2055` clashes with `0.0.0.0:2055` of [collector.netflow] listen"],
        ),
        (
            "IPv6 listen without brackets",
            "[web]\nlisten = \"::1:8080\"\n".to_owned(),
            &["2:10: invalid address in `listen` in [web]: `::1:8080`: an IPv6 address must be written in brackets: [ADDR]:PORT"],
        ),
        (
            "hostgroup without a name",
            "[[hostgroup]]\nprefixes = [\"192.0.2.0/24\"]\n".to_owned(),
            &["1:1: [[hostgroup]] needs a `name`"],
        ),
        (
            "within names nothing",
            format!("{HG}within = \"customer\"\n"),
            &["4:10: `within` names no hostgroup: `customer`"],
        ),
    ];
    for (what, text, want) in cases {
        assert_eq!(errors(text), *want, "case: {what}\n---\n{text}---");
    }
}

#[test]
fn every_error_is_reported_in_source_order() {
    let text = format!(
        "data_dir = 5\n[web]\nlisten = \"nowhere\"\n{HG}[hostgroup.thresholds]\npps = -1\nbps = \"lots\"\n"
    );
    assert_eq!(
        errors(&text),
        vec![
            "1:12: `data_dir` must be a string, found an integer",
            "3:10: invalid address in `listen` in [web]: `nowhere`: expected IP:PORT (IPv6 as [ADDR]:PORT)",
            "8:7: `pps` in [hostgroup.thresholds] must be a positive integer, got -1",
            "9:7: `bps` in [hostgroup.thresholds] must be a positive integer, found a string",
        ]
    );
}

#[test]
fn a_carve_out_with_within_is_allowed() {
    let text = format!(
        "{HG}[[hostgroup]]\nname = \"b\"\nwithin = \"a\"\nprefixes = [\"192.0.2.128/25\"]\n"
    );
    let l = parse(Path::new("t.toml"), &text).unwrap();
    assert_eq!(l.config.hostgroups[1].within.as_deref(), Some("a"));
}

#[test]
fn errors_print_as_path_line_col_message() {
    let e = parse(Path::new("/etc/levee/levee.toml"), "x = 1\n").unwrap_err();
    assert_eq!(e.to_string(), "/etc/levee/levee.toml:1:1: unknown key `x`");
}

#[test]
fn columns_count_characters_not_bytes() {
    // "é" is two bytes; the error must still point at column 12.
    let text = "# café\n[web]\nlisten = \"é:1\"\n";
    let e = errors(text);
    assert_eq!(e.len(), 1);
    assert!(e[0].starts_with("3:10: "), "{e:?}");
    assert_eq!(line_col("aé b", 4), (1, 4));
}

#[test]
fn an_empty_file_is_the_defaults() {
    let l = parse(Path::new("t.toml"), "").unwrap();
    assert_eq!(l.config, Config::default());
}

#[test]
fn the_documented_example_states_the_real_defaults() {
    let path = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/config/levee.toml"));
    let text = std::fs::read_to_string(path).unwrap();
    let l = parse(path, &text).unwrap_or_else(|e| panic!("{e}"));
    let expected = Config {
        hostgroups: vec![Hostgroup {
            name: "customers".into(),
            prefixes: vec![
                "192.0.2.0/24".parse().unwrap(),
                "2001:db8::/48".parse().unwrap(),
            ],
            within: None,
            thresholds: Thresholds::default(),
            prefix_thresholds: None,
            mitigation: HostgroupMitigation::default(),
        }],
        ..Config::default()
    };
    assert_eq!(l.config, expected);
    // Each commented-out key must be a real key: uncommenting them all still parses.
    let uncommented: String = text
        .lines()
        .map(|l| match l.strip_prefix("# ") {
            Some(rest) if rest.contains(" = ") && !rest.starts_with(' ') => {
                rest.split("  #").next().unwrap_or(rest)
            }
            // A table documented as an example (`# [hostgroup.…]`).
            Some(rest) if rest.starts_with("[hostgroup.") && rest.ends_with(']') => rest,
            _ => l,
        })
        .collect::<Vec<_>>()
        .join("\n");
    // `within` would name a hostgroup that does not exist; drop only that.
    let uncommented = uncommented.replace("within = \"all-customers\"", "");
    parse(path, &uncommented).unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn the_data_dir_must_be_usable_on_this_machine() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("file");
    std::fs::write(&file, b"").unwrap();
    let text = format!("data_dir = \"{}\"\n", file.display());
    let e = parse_with(Path::new("t.toml"), &text, Checks::Environment).unwrap_err();
    assert_eq!(
        e.errors[0].message,
        format!(
            "data_dir `{}` exists and is not a directory",
            file.display()
        )
    );
    assert_eq!((e.errors[0].line, e.errors[0].col), (1, 12));
    // A directory that does not exist yet but can be created is fine.
    let text = format!("data_dir = \"{}/new/sub\"\n", dir.path().display());
    parse_with(Path::new("t.toml"), &text, Checks::Environment).unwrap();
}

#[test]
fn reload_diffs_name_what_changed() {
    let a = parse(
        Path::new("t"),
        &format!("{HG}[hostgroup.thresholds]\npps = 10\n"),
    )
    .unwrap();
    let b = parse(
        Path::new("t"),
        &format!("{HG}[hostgroup.thresholds]\npps = 20\n[mitigation]\ndry_run = true\n"),
    )
    .unwrap();
    let d = Diff::between(&a, &b);
    assert_eq!(
        d.changed["hostgroup[0].thresholds.pps"],
        ["10".to_owned(), "20".to_owned()]
    );
    assert_eq!(d.added["mitigation.dry_run"], "true");
    assert!(d.removed.is_empty());
    assert!(Diff::between(&a, &a).is_empty());
}

#[test]
fn flowspec_actions_are_read_whole() {
    let text = format!(
        "{HG}[hostgroup.mitigation]\nflowspec_action = \"redirect\"\nflowspec_redirect = \"65000:666\"\n"
    );
    let l = parse(Path::new("t.toml"), &text).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        l.config.hostgroups[0].mitigation.flowspec_action,
        levee_bgp::FlowAction::Redirect {
            asn: 65000,
            value: 666
        }
    );
    let text = format!("{HG}[hostgroup.mitigation]\nflowspec_rate_limit = 1000\n");
    let l = parse(Path::new("t.toml"), &text).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        l.config.hostgroups[0].mitigation.flowspec_action,
        levee_bgp::FlowAction::rate_limit(1000),
        "a rate alone still rate-limits"
    );
    let text =
        format!("{HG}[hostgroup.mitigation]\nflowspec_action = \"mark\"\nflowspec_dscp = 8\n");
    let l = parse(Path::new("t.toml"), &text).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        l.config.hostgroups[0].mitigation.flowspec_action,
        levee_bgp::FlowAction::MarkDscp { dscp: 8 }
    );
}

#[test]
fn prefix_aggregates_stay_inside_their_hostgroup_and_out_of_carve_outs() {
    let pt =
        |len: u8| format!("[hostgroup.prefix_thresholds]\nprefix_length_v4 = {len}\npps = 1000\n");
    // A /24 cut at /24 is one aggregate: fine.
    assert!(errors(&format!("{HG}{}", pt(24))).is_empty());
    // Shorter than the hostgroup's own prefix: the rule reaches past it.
    let e = errors(&format!("{HG}{}", pt(23)));
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(
        e[0].contains("shorter than its prefix 192.0.2.0/24"),
        "{e:?}"
    );
    // A carve-out inside an aggregate: the rule would reach its hosts.
    let carve = "[[hostgroup]]\nname = \"b\"\nwithin = \"a\"\nprefixes = [\"192.0.2.16/28\"]\n";
    let e = errors(&format!("{HG}{}{carve}", pt(24)));
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(
        e[0].contains("hold 192.0.2.16/28 of hostgroup `b`") && e[0].contains("use 28 or more"),
        "{e:?}"
    );
    assert!(errors(&format!("{HG}{}{carve}", pt(28))).is_empty());
    // One address is a host, not a prefix.
    let e = errors(&format!("{HG}{}", pt(32)));
    assert!(e.len() == 1 && e[0].contains("between 1 and 31"), "{e:?}");
}

#[test]
fn an_upstream_says_whether_it_takes_ipv6_flowspec() {
    let up = "[[bgp.upstream]]\nname = \"transit-a\"\nneighbor = \"198.51.100.1\"\n";
    let l = parse(Path::new("t.toml"), &format!("[bgp]\n{up}")).unwrap();
    assert!(l.config.bgp.upstreams[0].flowspec_ipv6, "true by default");
    let l = parse(
        Path::new("t.toml"),
        &format!("[bgp]\n{up}flowspec_ipv6 = false\n"),
    )
    .unwrap();
    assert!(!l.config.bgp.upstreams[0].flowspec_ipv6);
    // Its own FlowSpec budget.
    let l = parse(
        Path::new("t.toml"),
        &format!("[bgp]\n{up}max_flowspec = 10\n"),
    )
    .unwrap();
    assert_eq!(l.config.bgp.upstreams[0].max_flowspec, Some(10));
    assert_eq!(
        parse(Path::new("t.toml"), &format!("[bgp]\n{up}"))
            .unwrap()
            .config
            .bgp
            .upstreams[0]
            .max_flowspec,
        None
    );
}

#[test]
fn a_file_with_secrets_is_named_by_a_keyed_hash_only() {
    let path = Path::new("/etc/levee/levee.toml");
    let mac = |v: &str| format!("mac({})", &v[..8]);
    let plain = parse(path, "[web]\nlisten = \"127.0.0.1:8080\"\n").unwrap();
    let id = plain.identity(&mac);
    assert_eq!(id.sha256.as_deref(), Some(plain.sha256.as_str()));
    assert_eq!(id.hmac_sha256, format!("mac({})", &plain.sha256[..8]));
    for secret in [
        "[scrubbing]\nhttp_token = \"hunter2\"\n",
        "[scrubbing]\nhttp_url = \"https://u:hunter2@scrub.example.net/\"\n",
    ] {
        let l = parse(path, secret).unwrap();
        let id = l.identity(&mac);
        assert_eq!(id.sha256, None, "{secret}");
        assert!(!id.hmac_sha256.is_empty());
    }
}
