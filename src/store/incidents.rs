//! The incidents' key space: a record by start time and id, and its
//! timeline a minute per segment.

use super::*;

impl Store {
    // ---- incidents: key = started (Unix ms, u64 BE) ‖ id ------------------

    /// Stores incidents in one write, durable when this returns: for each,
    /// its record (without its timeline) and the timeline segments given —
    /// (index, points) — replacing what was there under the same keys. One
    /// sync for all the incidents a second touches, not one each (during a
    /// carpet bombing hundreds run at once); and a second rewrites only its
    /// incidents' last segments, not day-long timelines.
    pub fn incidents_put(&self, writes: &[IncidentWrite]) -> Result<()> {
        if writes.is_empty() {
            return Ok(());
        }
        let h = self.cf(Cf::Incidents);
        let mut b = WriteBatch::default();
        for w in writes {
            let base = incident_key(w.started_ms, &w.id);
            for (index, points) in &w.segments {
                let mut key = base.clone();
                key.push(0);
                key.extend_from_slice(&index.to_be_bytes());
                b.put_cf(h, key, points);
            }
            b.put_cf(h, base, &w.record);
        }
        self.db
            .write_opt(b, &Self::write_options(Durability::Sync))?;
        Ok(())
    }

    /// An incident's record and its timeline segments in order (none for
    /// incidents stored with the timeline inside the record).
    pub fn incident_get(&self, started_ms: u64, id: &str) -> Result<Option<StoredIncident>> {
        let base = incident_key(started_ms, id);
        let Some(record) = self.db.get_cf(self.cf(Cf::Incidents), &base)? else {
            return Ok(None);
        };
        let mut prefix = base;
        prefix.push(0);
        let mut segments = Vec::new();
        for kv in self.scan_prefix(Cf::Incidents, &prefix) {
            segments.push(kv?.1.into_vec());
        }
        Ok(Some((record, segments)))
    }

    /// The newest incidents' records (started last first), without their
    /// timelines.
    pub fn incidents_newest(&self, limit: usize) -> Result<Vec<Vec<u8>>> {
        let mut out = Vec::new();
        for kv in self
            .db
            .iterator_cf(self.cf(Cf::Incidents), IteratorMode::End)
        {
            if out.len() >= limit {
                break;
            }
            let (k, v) = kv?;
            // Ids are printable; a zero byte after the time marks a segment.
            if k.len() > 8 && k[8..].contains(&0) {
                continue;
            }
            out.push(v.into_vec());
        }
        Ok(out)
    }
}

/// What [`Store::incidents_put`] writes for one incident.
#[derive(Debug, Clone)]
pub struct IncidentWrite {
    pub started_ms: u64,
    pub id: String,
    /// The incident without its timeline (JSON).
    pub record: Vec<u8>,
    /// Timeline segments to (re)write: index and points (JSON array).
    pub segments: Vec<(u32, Vec<u8>)>,
}

/// An incident as stored: its record, and its timeline segments in order.
pub type StoredIncident = (Vec<u8>, Vec<Vec<u8>>);

pub(super) fn incident_key(started_ms: u64, id: &str) -> Vec<u8> {
    let mut key = started_ms.to_be_bytes().to_vec();
    key.extend_from_slice(id.as_bytes());
    key
}
