//! How times appear on the wire: RFC 3339 in UTC with milliseconds.

use berth_domain::Timestamp;
use std::time::{Duration, UNIX_EPOCH};

pub fn rfc3339(at: Timestamp) -> String {
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(at.millis())).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_utc_milliseconds() {
        assert_eq!(
            rfc3339(Timestamp::from_millis(1_795_302_278_949)),
            "2026-11-21T23:04:38.949Z"
        );
    }
}
