//! The data store: one JSON value that the host writes through the API
//! (`PUT /mmds` replaces it, `PATCH /mmds` merges an RFC 7396 JSON merge
//! patch into it) and the guest reads by path, in JSON or in EC2's IMDS
//! text format. Its serialized size never exceeds its limit
//! (Firecracker's `--mmds-size-limit`).

use serde_json::{Map, Value};

/// Firecracker's default limit: the API's largest request body.
pub const DEFAULT_LIMIT: usize = 51200;

/// How the guest wants a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `Accept: application/json`: the value as JSON.
    Json,
    /// EC2's IMDS text: an object lists its keys one per line (a key
    /// whose value is an object ends with '/'), a string is itself.
    Imds,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    #[error("the MMDS data store would be {size} bytes, over its limit of {limit} bytes (--mmds-size-limit)")]
    TooLarge { size: usize, limit: usize },
    #[error("The MMDS data store is not initialized.")]
    NotInitialized,
    #[error("The MMDS resource does not exist.")]
    NotFound,
    #[error("Cannot retrieve value. The value has an unsupported type.")]
    UnsupportedValueType,
}

#[derive(Debug, Clone)]
pub struct DataStore {
    value: Value,
    initialized: bool,
    limit: usize,
}

impl Default for DataStore {
    fn default() -> Self {
        DataStore::new(DEFAULT_LIMIT)
    }
}

/// Applies the JSON merge patch `patch` to `target` (RFC 7396, section 2):
/// an object patch merges key by key, `null` removes a key, anything else
/// replaces the target.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    if let Value::Object(map) = target {
        for (key, value) in patch {
            if value.is_null() {
                map.remove(key);
            } else {
                merge_patch(map.entry(key.clone()).or_insert(Value::Null), value);
            }
        }
    }
}

/// The number of bytes `value` takes as compact JSON.
fn json_size(value: &Value) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    // Writing a Value to a counter cannot fail: its keys are strings.
    let _ = serde_json::to_writer(&mut count, value);
    count.0
}

impl DataStore {
    /// An empty store whose JSON may take at most `limit` bytes.
    pub fn new(limit: usize) -> DataStore {
        DataStore {
            value: Value::Null,
            initialized: false,
            limit,
        }
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    fn check_size(&self, value: &Value) -> Result<(), StoreError> {
        let size = json_size(value);
        if size > self.limit {
            return Err(StoreError::TooLarge {
                size,
                limit: self.limit,
            });
        }
        Ok(())
    }

    /// `PUT /mmds`: replaces the contents.
    pub fn put(&mut self, value: Value) -> Result<(), StoreError> {
        self.check_size(&value)?;
        self.value = value;
        self.initialized = true;
        Ok(())
    }

    /// `PATCH /mmds`: merges `patch` into the contents; nothing changes
    /// when the result would be over the limit.
    pub fn patch(&mut self, patch: &Value) -> Result<(), StoreError> {
        if !self.initialized {
            return Err(StoreError::NotInitialized);
        }
        let mut merged = self.value.clone();
        merge_patch(&mut merged, patch);
        self.check_size(&merged)?;
        self.value = merged;
        Ok(())
    }

    /// Whether a `PUT /mmds` gave the store its contents.
    pub fn initialized(&self) -> bool {
        self.initialized
    }

    /// `GET /mmds`: the contents, `{}` before the first PUT.
    pub fn contents(&self) -> Value {
        if self.initialized {
            self.value.clone()
        } else {
            Value::Object(Map::new())
        }
    }

    /// The value at `path` (a URI path: '/'-separated keys or array
    /// indices, repeated and trailing slashes ignored) in `format`.
    pub fn get(&self, path: &str, format: Format) -> Result<String, StoreError> {
        if !self.initialized {
            return Err(StoreError::NotFound);
        }
        let mut value = &self.value;
        for part in path.split('/').filter(|p| !p.is_empty()) {
            value = match value {
                Value::Object(map) => map.get(part),
                Value::Array(items) => part.parse::<usize>().ok().and_then(|i| items.get(i)),
                _ => None,
            }
            .ok_or(StoreError::NotFound)?;
        }
        match format {
            Format::Json => Ok(value.to_string()),
            Format::Imds => imds(value),
        }
    }
}

fn imds(value: &Value) -> Result<String, StoreError> {
    match value {
        Value::String(s) => Ok(s.clone()),
        Value::Object(map) => {
            let keys: Vec<String> = map
                .iter()
                .map(|(k, v)| {
                    if v.is_object() {
                        format!("{k}/")
                    } else {
                        k.clone()
                    }
                })
                .collect();
            Ok(keys.join("\n"))
        }
        _ => Err(StoreError::UnsupportedValueType),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn store() -> DataStore {
        let mut s = DataStore::default();
        s.put(json!({
            "latest": {"meta-data": {"ami-id": "ami-1", "reservation-id": "r-2", "net": {}}},
            "age": 43,
            "list": ["a", {"b": "c"}],
        }))
        .unwrap();
        s
    }

    #[test]
    fn imds_and_json_formats() {
        let s = store();
        assert_eq!(s.get("/latest", Format::Imds).unwrap(), "meta-data/");
        assert_eq!(
            s.get("/latest/meta-data/", Format::Imds).unwrap(),
            "ami-id\nnet/\nreservation-id"
        );
        assert_eq!(
            s.get("//latest//meta-data/ami-id", Format::Imds).unwrap(),
            "ami-1"
        );
        assert_eq!(
            s.get("/latest/meta-data/ami-id", Format::Json).unwrap(),
            "\"ami-1\""
        );
        assert_eq!(s.get("/age", Format::Json).unwrap(), "43");
        assert_eq!(
            s.get("/age", Format::Imds),
            Err(StoreError::UnsupportedValueType)
        );
        assert_eq!(s.get("/list/1/b", Format::Imds).unwrap(), "c");
        assert_eq!(s.get("/list/2", Format::Imds), Err(StoreError::NotFound));
        assert_eq!(s.get("/nope", Format::Json), Err(StoreError::NotFound));
        assert_eq!(s.get("/age/x", Format::Json), Err(StoreError::NotFound));
        assert!(s.get("/", Format::Json).unwrap().starts_with('{'));
    }

    #[test]
    fn an_empty_store_has_nothing() {
        let mut s = DataStore::default();
        assert_eq!(s.get("/", Format::Json), Err(StoreError::NotFound));
        assert_eq!(s.contents(), json!({}));
        assert_eq!(s.patch(&json!({"a": 1})), Err(StoreError::NotInitialized));
    }

    #[test]
    fn merge_patch_follows_rfc_7396() {
        // The examples of RFC 7396, appendix A (a selection).
        for (target, patch, result) in [
            (json!({"a": "b"}), json!({"a": "c"}), json!({"a": "c"})),
            (
                json!({"a": "b"}),
                json!({"b": "c"}),
                json!({"a": "b", "b": "c"}),
            ),
            (json!({"a": "b"}), json!({"a": null}), json!({})),
            (json!({"a": ["b"]}), json!({"a": "c"}), json!({"a": "c"})),
            (json!({"a": "c"}), json!({"a": ["b"]}), json!({"a": ["b"]})),
            (
                json!({"a": {"b": "c"}}),
                json!({"a": {"b": "d", "c": null}}),
                json!({"a": {"b": "d"}}),
            ),
            (json!(["a", "b"]), json!(["c", "d"]), json!(["c", "d"])),
            (json!({"a": "b"}), json!(["c"]), json!(["c"])),
            (
                json!({"e": null}),
                json!({"a": 1}),
                json!({"e": null, "a": 1}),
            ),
            (
                json!([1, 2]),
                json!({"a": "b", "c": null}),
                json!({"a": "b"}),
            ),
            (
                json!({}),
                json!({"a": {"bb": {"ccc": null}}}),
                json!({"a": {"bb": {}}}),
            ),
        ] {
            let mut t = target.clone();
            merge_patch(&mut t, &patch);
            assert_eq!(t, result, "{target} + {patch}");
        }
        let mut s = store();
        s.patch(&json!({"age": null, "latest": {"meta-data": {"ami-id": "ami-9"}}}))
            .unwrap();
        assert_eq!(s.get("/age", Format::Json), Err(StoreError::NotFound));
        assert_eq!(
            s.get("/latest/meta-data/ami-id", Format::Imds).unwrap(),
            "ami-9"
        );
    }

    #[test]
    fn the_limit_holds_for_put_and_patch() {
        let mut s = DataStore::new(20);
        s.put(json!({"a": "0123456789"})).unwrap(); // 18 bytes
                                                    // {"a":"0123456789abcd"}: 22 bytes.
        let e = s.put(json!({"a": "0123456789abcd"})).unwrap_err();
        assert_eq!(
            e,
            StoreError::TooLarge {
                size: 22,
                limit: 20
            }
        );
        assert!(s.patch(&json!({"b": "c"})).is_err());
        assert_eq!(s.contents(), json!({"a": "0123456789"}));
        s.patch(&json!({"a": "x"})).unwrap();
        assert_eq!(s.contents(), json!({"a": "x"}));
    }
}
