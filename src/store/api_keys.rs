//! The API keys' key space (`api_keys`): a key's record by its id.

use super::*;

impl Store {
    // ---- API keys: key = key id, value = the key's record (JSON) ----------

    pub fn api_key_put(&self, id: &str, record: &[u8]) -> Result<()> {
        self.db.put_cf_opt(
            self.cf(Cf::ApiKeys),
            id.as_bytes(),
            record,
            &Self::write_options(Durability::Sync),
        )?;
        crash::point("apikey.put", &|| id.to_owned());
        Ok(())
    }

    pub fn api_key_get(&self, id: &str) -> Result<Option<Vec<u8>>> {
        Ok(self.db.get_cf(self.cf(Cf::ApiKeys), id.as_bytes())?)
    }

    /// Every API key record, by id.
    pub fn api_keys(&self) -> Result<Vec<(String, Vec<u8>)>> {
        let mut out = Vec::new();
        for kv in self
            .db
            .iterator_cf(self.cf(Cf::ApiKeys), IteratorMode::Start)
        {
            let (k, v) = kv?;
            out.push((String::from_utf8_lossy(&k).into_owned(), v.into_vec()));
        }
        Ok(out)
    }
}
