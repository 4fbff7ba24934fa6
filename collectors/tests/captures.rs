//! Real exporters' captures (the corpus in `../shared/captures/`, read in
//! place; see its PROVENANCE.md): every one decodes without a panic, and the
//! clean ones to exactly the record counts PROVENANCE.md gives.
//!
//! "Records" is what tshark counted: NetFlow v5 records, NetFlow v9/IPFIX
//! data and options-data records, sFlow flow samples (compact and expanded).
//! A capture is "clean" when tshark found nothing malformed and no data set
//! lacks its template; the others must only decode without a panic.
//!
//! The corpus is not in the repository, so these tests are `#[ignore]`d:
//! `make test-corpus` runs them (and fails when the corpus is missing).
//! `golden.rs` checks the committed golden set in every `make test`.

mod common;

use common::corpus;

#[test]
#[ignore = "needs the capture corpus (../shared/captures or LEVEE_CAPTURES): run `make test-corpus`"]
fn every_capture_decodes_and_clean_ones_to_their_record_counts() {
    let dir = corpus();
    let expected = common::provenance(&dir);
    assert!(
        expected.len() >= 80,
        "PROVENANCE.md lists only {} pcaps",
        expected.len()
    );
    let wrong = common::check_record_counts(&dir, &expected);
    assert!(
        wrong.is_empty(),
        "{} captures decode wrongly:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
}

/// The records' sampling rates, per capture.
fn rates(file: &str) -> std::collections::BTreeSet<u32> {
    common::replay(&corpus().join(file))
        .flows
        .iter()
        .map(|r| r.sampling)
        .collect()
}

#[test]
#[ignore = "needs the capture corpus (../shared/captures or LEVEE_CAPTURES): run `make test-corpus`"]
fn sampling_rates_come_from_where_each_vendor_puts_them() {
    let cases: &[(&str, &[u32])] = &[
        // NetFlow v5 header: interval 1000.
        ("netflow5/juniper-mx80_netflow5.pcap", &[1000]),
        // IPFIX options: selector with samplingPopulation 256 / samplingSize 1.
        (
            "ipfix/cisco-asr9k-xr_ipfix-ipv6-sampling-options.pcap",
            &[256],
        ),
        // NetFlow v9 options: two samplers, 1:2000 and 1:4000, named per record.
        (
            "netflow9/cisco-ncs55-iosxr_nfv9-multiple-samplers.pcap",
            &[2000, 4000],
        ),
        // Huawei: sampling interval (34) in every data record.
        (
            "netflow9/huawei-ce8851_netstream-sampling-in-data.pcap",
            &[2048],
        ),
        // Juniper MS-DPC: options data after the flows, in the same datagram.
        (
            "netflow9/juniper-mx960-msdpc_nfv9-data-before-template.pcap",
            &[100],
        ),
        // (pktvisor's capture is no case: its sampling options come from
        // another exporter address, minutes after the data.)
        ("netflow9/akvorado_nfv9-options-sampling.pcap", &[30000]),
        // sFlow: the rate of each sample.
        ("sflow/akvorado_sflow-5-flow-samples.pcap", &[1024]),
        ("sflow/lcs_sflow-expanded-lag-counters.pcap", &[1024, 16384]),
    ];
    for (file, want) in cases {
        let got: Vec<u32> = rates(file).into_iter().collect();
        assert_eq!(got, *want, "{file}");
    }
}
