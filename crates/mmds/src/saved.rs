//! An MMDS carried to another process: a live migration moves the data
//! store (its contents and size limit) and the V2 session tokens the
//! guest holds, each with the time it has left, so that the guest's
//! metadata reads go on across the move as if nothing happened.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::store::{DataStore, StoreError};
use crate::token::{MAX_TOKENS, MAX_TTL_SECONDS, TOKEN_LEN};
use crate::Mmds;

/// The MMDS as it travels (JSON: the store is any JSON value).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedMmds {
    /// The store's limit in bytes of JSON (`--mmds-size-limit`).
    pub limit: usize,
    /// The contents; `None` before the first `PUT /mmds`.
    pub data: Option<Value>,
    /// The live session tokens.
    pub tokens: Vec<SavedToken>,
}

/// A live V2 session token and the milliseconds it has left.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedToken {
    pub token: String,
    pub ms_left: u64,
}

/// Why a carried MMDS is refused.
#[derive(Debug, thiserror::Error)]
pub enum SavedMmdsError {
    #[error("the MMDS data store: {0}")]
    Store(#[from] StoreError),
    #[error("an MMDS session token is malformed or outlives the longest time to live")]
    BadToken,
    #[error("more MMDS session tokens than an MMDS keeps ({0})")]
    TooManyTokens(usize),
}

impl Mmds {
    /// What [`Mmds::restore`] rebuilds in another process; `now` dates
    /// the tokens.
    pub fn save(&self, now: Instant) -> SavedMmds {
        SavedMmds {
            limit: self.store.limit(),
            data: self.store.initialized().then(|| self.store.contents()),
            tokens: self
                .tokens
                .live(now)
                .map(|(token, left)| SavedToken {
                    token: token.to_string(),
                    ms_left: u64::try_from(left.as_millis()).unwrap_or(u64::MAX),
                })
                .collect(),
        }
    }

    /// Puts `saved` in place of this MMDS's store and tokens (the token
    /// authority keeps its own entropy source); nothing changes when
    /// `saved` is refused.
    pub fn restore(&mut self, saved: &SavedMmds, now: Instant) -> Result<(), SavedMmdsError> {
        if saved.tokens.len() > MAX_TOKENS {
            return Err(SavedMmdsError::TooManyTokens(saved.tokens.len()));
        }
        let mut store = DataStore::new(saved.limit);
        if let Some(data) = &saved.data {
            store.put(data.clone())?;
        }
        let longest = u64::from(MAX_TTL_SECONDS) * 1000;
        let mut tokens = Vec::with_capacity(saved.tokens.len());
        for t in &saved.tokens {
            let text: [u8; TOKEN_LEN] = t
                .token
                .as_bytes()
                .try_into()
                .map_err(|_| SavedMmdsError::BadToken)?;
            if !text.iter().all(u8::is_ascii_hexdigit) || t.ms_left > longest {
                return Err(SavedMmdsError::BadToken);
            }
            tokens.push((text, now + Duration::from_millis(t.ms_left)));
        }
        self.store = store;
        self.tokens.replace(tokens);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn store_and_live_tokens_survive_a_round_trip() {
        let t0 = Instant::now();
        let mut a = Mmds::default();
        a.store.put(json!({"latest": {"ami-id": "ami-1"}})).unwrap();
        let long = a.tokens.generate(600, t0).unwrap();
        let short = a.tokens.generate(1, t0).unwrap();
        // One second later the short token is gone, the long one has 599 s.
        let saved = a.save(t0 + Duration::from_secs(1));
        assert_eq!(saved.tokens.len(), 1);
        assert_eq!(saved.tokens[0].ms_left, 599_000);
        let text = serde_json::to_string(&saved).unwrap();
        let back: SavedMmds = serde_json::from_str(&text).unwrap();

        let t1 = Instant::now();
        let mut b = Mmds::default();
        b.restore(&back, t1).unwrap();
        assert_eq!(b.store.contents(), json!({"latest": {"ami-id": "ami-1"}}));
        assert_eq!(b.store.limit(), a.store.limit());
        assert!(b.tokens.is_valid(&long, t1 + Duration::from_secs(598)));
        assert!(!b.tokens.is_valid(&long, t1 + Duration::from_secs(600)));
        assert!(!b.tokens.is_valid(&short, t1));
    }

    #[test]
    fn an_empty_store_stays_uninitialized() {
        let now = Instant::now();
        let saved = Mmds::default().save(now);
        assert_eq!(saved.data, None);
        let mut b = Mmds::default();
        b.restore(&saved, now).unwrap();
        assert!(b.store.patch(&json!({"a": 1})).is_err(), "PATCH before PUT");
    }

    #[test]
    fn bad_carried_state_is_refused_and_changes_nothing() {
        let now = Instant::now();
        let mut b = Mmds::default();
        b.store.put(json!({"keep": 1})).unwrap();
        let token = b.tokens.generate(60, now).unwrap();
        let refused = [
            SavedMmds {
                limit: 8,
                data: Some(json!({"far": "too large for eight bytes"})),
                tokens: vec![],
            },
            SavedMmds {
                limit: 100,
                data: None,
                tokens: vec![SavedToken {
                    token: "not hex".into(),
                    ms_left: 1,
                }],
            },
            SavedMmds {
                limit: 100,
                data: None,
                tokens: vec![SavedToken {
                    token: "a".repeat(TOKEN_LEN),
                    ms_left: u64::from(MAX_TTL_SECONDS) * 1000 + 1,
                }],
            },
            SavedMmds {
                limit: 100,
                data: None,
                tokens: vec![
                    SavedToken {
                        token: "a".repeat(TOKEN_LEN),
                        ms_left: 1
                    };
                    MAX_TOKENS + 1
                ],
            },
        ];
        for saved in &refused {
            assert!(b.restore(saved, now).is_err(), "{saved:?}");
            assert_eq!(b.store.contents(), json!({"keep": 1}));
            assert!(b.tokens.is_valid(&token, now));
        }
    }
}
