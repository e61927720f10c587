//! Per-space settings: `spaces/<space name>`, holding the retention policy the node daemon
//! applies on its own and the space's quota.

use serde::{Deserialize, Serialize};

use super::envelope;
use super::policy::Policy;
use crate::error::Result;

/// Magic of a space settings file.
pub const MAGIC: &[u8; 8] = b"PUCESPAC";
/// Current version of the record (2 adds `quota`; version 1 is read as having none).
pub const VERSION: u8 = 2;

/// Settings of one space.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpaceSettings {
    /// The retention policy (empty: keep everything).
    pub policy: Policy,
    /// When the settings were last changed, nanoseconds since the epoch.
    pub updated_ns: i64,
    /// The most stored bytes the space's snapshots may reach (`puce space set --quota`).
    pub quota: Option<u64>,
}

/// Version 1 of the record: no quota.
#[derive(Deserialize)]
struct SpaceSettingsV1 {
    policy: Policy,
    updated_ns: i64,
}

impl SpaceSettings {
    /// Encode as the bytes of the file.
    pub fn encode(&self) -> Result<Vec<u8>> {
        envelope::encode(MAGIC, VERSION, self)
    }

    /// Decode the file.
    pub fn decode(bytes: &[u8]) -> Result<SpaceSettings> {
        // The version byte follows the magic; the envelope checks both again.
        if bytes.get(MAGIC.len()) == Some(&1) {
            let (_, v1): (u8, SpaceSettingsV1) =
                envelope::decode("space settings", MAGIC, VERSION, bytes)?;
            return Ok(SpaceSettings {
                policy: v1.policy,
                updated_ns: v1.updated_ns,
                quota: None,
            });
        }
        envelope::decode("space settings", MAGIC, VERSION, bytes).map(|(_, s)| s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::hexdump;
    use crate::format::policy::Within;

    /// Golden: a space settings file body, annotated.
    #[test]
    fn golden_space_settings() {
        let s = SpaceSettings {
            policy: Policy {
                keep_last: Some(3),
                keep_daily: Some(7),
                keep_yearly: Some(-1),
                keep_within: Some(Within {
                    years: 0,
                    months: 1,
                    days: 0,
                    hours: 0,
                }),
                keep_tags: vec!["k".into()],
                ..Policy::default()
            },
            updated_ns: 2,
            quota: Some(300),
        };
        let bytes = s.encode().unwrap();
        let body = [
            "0106",       // keep_last Some(3) (zigzag)
            "00",         // keep_hourly None
            "010e",       // keep_daily Some(7)
            "00",         // keep_weekly None
            "00",         // keep_monthly None
            "0101",       // keep_yearly Some(-1)
            "0100020000", // keep_within Some(0y 1m 0d 0h)
            "01016b",     // keep_tags ["k"]
            "04",         // updated_ns 2
            "01ac02",     // quota Some(300)
        ]
        .concat();
        assert_eq!(&hexdump(&bytes)[..18], "505543455350414302"); // "PUCESPAC", version 2
        assert_eq!(&hexdump(&bytes)[26..26 + body.len()], body);
        assert_eq!(SpaceSettings::decode(&bytes).unwrap(), s);
    }

    /// A version-1 file (written before quotas) reads as having no quota.
    #[test]
    fn a_version_1_file_has_no_quota() {
        #[derive(Serialize)]
        struct V1 {
            policy: Policy,
            updated_ns: i64,
        }
        let policy = Policy {
            keep_last: Some(3),
            ..Policy::default()
        };
        let bytes = envelope::encode(
            MAGIC,
            1,
            &V1 {
                policy: policy.clone(),
                updated_ns: 5,
            },
        )
        .unwrap();
        assert_eq!(&hexdump(&bytes)[..18], "505543455350414301");
        let s = SpaceSettings::decode(&bytes).unwrap();
        assert_eq!((s.policy, s.updated_ns, s.quota), (policy, 5, None));
    }
}
