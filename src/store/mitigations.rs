//! Mitigations: intents (`i/` ‖ route key) and the mitigation log
//! (`l/` ‖ ms ‖ seq).

use super::*;

impl Store {
    // ---- mitigations: intents (`i/` ‖ route key) and the log (`l/` ‖ ms ‖ seq)

    /// Every intent: (route key, record).
    pub fn intents(&self) -> Result<Vec<(String, Vec<u8>)>> {
        crash::point("intents.read", &String::new);
        self.prefixed(Cf::Mitigations, b"i/").map(|v| {
            v.into_iter()
                .map(|(k, v)| (String::from_utf8_lossy(&k).into_owned(), v))
                .collect()
        })
    }

    /// Appends to the mitigation log (MIT-9); durable on return. `seq`
    /// orders entries of one millisecond.
    pub fn mitigation_log_put(&self, at_ms: u64, seq: u64, record: &[u8]) -> Result<()> {
        let mut key = b"l/".to_vec();
        key.extend_from_slice(&at_ms.to_be_bytes());
        key.extend_from_slice(&seq.to_be_bytes());
        self.db.put_cf_opt(
            self.cf(Cf::Mitigations),
            key,
            record,
            &Self::write_options(Durability::Sync),
        )?;
        crash::point("mitigation_log.put", &|| {
            serde_json::from_slice::<serde_json::Value>(record)
                .ok()
                .and_then(|v| v["action"].as_str().map(str::to_owned))
                .unwrap_or_default()
        });
        Ok(())
    }

    /// The newest mitigation log entries, newest first, at most `limit`.
    pub fn mitigation_log_newest(&self, limit: usize) -> Result<Vec<Vec<u8>>> {
        let mut out = Vec::new();
        let end = b"l0".to_vec(); // just past every `l/` key
        for kv in self.db.iterator_cf(
            self.cf(Cf::Mitigations),
            IteratorMode::From(&end, Direction::Reverse),
        ) {
            let (k, v) = kv?;
            if !k.starts_with(b"l/") || out.len() >= limit {
                break;
            }
            out.push(v.into_vec());
        }
        Ok(out)
    }

    /// Entries whose key starts with `prefix`, the prefix cut off.
    fn prefixed(&self, cf: Cf, prefix: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        self.scan_prefix(cf, prefix)
            .map(|kv| kv.map(|(k, v)| (k[prefix.len()..].to_vec(), v.into_vec())))
            .collect()
    }
}
