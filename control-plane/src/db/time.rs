//! Timestamps as stored: UTC, fixed-width RFC 3339 text, so text order is time order on every backend.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use sqlx::encode::IsNull;
use sqlx::error::BoxDynError;
use sqlx::postgres::{PgArgumentBuffer, PgTypeInfo, PgValueRef};
use sqlx::sqlite::{SqliteArgumentValue, SqliteTypeInfo, SqliteValueRef};
use sqlx::{Decode, Encode, Postgres, Sqlite, Type};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct UtcTime(pub DateTime<Utc>);

impl UtcTime {
    pub fn now() -> Self {
        Self::from(Utc::now())
    }
    pub fn to_text(self) -> String {
        self.0.to_rfc3339_opts(SecondsFormat::Micros, true)
    }
}

impl From<DateTime<Utc>> for UtcTime {
    /// Truncates to microseconds, the stored precision, so a value read back compares equal.
    fn from(t: DateTime<Utc>) -> Self {
        let micros = t.timestamp_micros();
        Self(DateTime::from_timestamp_micros(micros).unwrap_or(t))
    }
}

impl std::fmt::Display for UtcTime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_text())
    }
}

impl Type<Sqlite> for UtcTime {
    fn type_info() -> SqliteTypeInfo {
        <String as Type<Sqlite>>::type_info()
    }
    fn compatible(ty: &SqliteTypeInfo) -> bool {
        <String as Type<Sqlite>>::compatible(ty)
    }
}

impl<'q> Encode<'q, Sqlite> for UtcTime {
    fn encode_by_ref(&self, buf: &mut Vec<SqliteArgumentValue<'q>>) -> Result<IsNull, BoxDynError> {
        <String as Encode<'q, Sqlite>>::encode(self.to_text(), buf)
    }
}

impl<'r> Decode<'r, Sqlite> for UtcTime {
    fn decode(value: SqliteValueRef<'r>) -> Result<Self, BoxDynError> {
        let text = <&str as Decode<'r, Sqlite>>::decode(value)?;
        Ok(Self(DateTime::parse_from_rfc3339(text)?.with_timezone(&Utc)))
    }
}

// PostgreSQL keeps the same text (a `text` column): one format, one order, one copy-database.
impl Type<Postgres> for UtcTime {
    fn type_info() -> PgTypeInfo {
        <String as Type<Postgres>>::type_info()
    }
    fn compatible(ty: &PgTypeInfo) -> bool {
        <String as Type<Postgres>>::compatible(ty)
    }
}

impl Encode<'_, Postgres> for UtcTime {
    fn encode_by_ref(&self, buf: &mut PgArgumentBuffer) -> Result<IsNull, BoxDynError> {
        <String as Encode<'_, Postgres>>::encode(self.to_text(), buf)
    }
}

impl<'r> Decode<'r, Postgres> for UtcTime {
    fn decode(value: PgValueRef<'r>) -> Result<Self, BoxDynError> {
        let text = <&str as Decode<'r, Postgres>>::decode(value)?;
        Ok(Self(DateTime::parse_from_rfc3339(text)?.with_timezone(&Utc)))
    }
}

/// A JSON document kept as text on both backends: read it into a `serde_json::Value` field with
/// `#[sqlx(try_from = "JsonText")]`.
#[derive(Debug, Clone)]
pub struct JsonText(pub serde_json::Value);

impl From<JsonText> for serde_json::Value {
    fn from(j: JsonText) -> Self {
        j.0
    }
}

impl Type<Sqlite> for JsonText {
    fn type_info() -> SqliteTypeInfo {
        <String as Type<Sqlite>>::type_info()
    }
    fn compatible(ty: &SqliteTypeInfo) -> bool {
        <String as Type<Sqlite>>::compatible(ty)
    }
}

impl<'r> Decode<'r, Sqlite> for JsonText {
    fn decode(value: SqliteValueRef<'r>) -> Result<Self, BoxDynError> {
        let text = <&str as Decode<'r, Sqlite>>::decode(value)?;
        Ok(Self(serde_json::from_str(text)?))
    }
}

impl Type<Postgres> for JsonText {
    fn type_info() -> PgTypeInfo {
        <String as Type<Postgres>>::type_info()
    }
    fn compatible(ty: &PgTypeInfo) -> bool {
        <String as Type<Postgres>>::compatible(ty)
    }
}

impl<'r> Decode<'r, Postgres> for JsonText {
    fn decode(value: PgValueRef<'r>) -> Result<Self, BoxDynError> {
        let text = <&str as Decode<'r, Postgres>>::decode(value)?;
        Ok(Self(serde_json::from_str(text)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_order_is_time_order() {
        let a = UtcTime::from(DateTime::from_timestamp(1_700_000_000, 5_000).unwrap());
        let b = UtcTime::from(DateTime::from_timestamp(1_700_000_000, 500_000_000).unwrap());
        let c = UtcTime::from(DateTime::from_timestamp(1_700_000_001, 0).unwrap());
        assert!(a.to_text() < b.to_text() && b.to_text() < c.to_text());
        assert!(a.to_text().ends_with('Z'));
    }
}
