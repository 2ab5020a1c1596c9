//! CronJob schedules: five-field cron (minute, hour, day of month, month,
//! day of week) and the `@hourly`… shorthands, as Kubernetes reads them, in
//! the job's `timeZone` or the host's own.

use chrono_tz::Tz;
use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};
use k8s_openapi::chrono::{DateTime, Utc};

/// A parsed schedule and the zone its times are read in.
#[derive(Debug, Clone)]
pub struct Schedule {
    cron: Cron,
    zone: Tz,
}

impl Schedule {
    /// `schedule` in `zone` (an IANA name; the host's zone when unset).
    /// The error names the field that is wrong and why.
    pub fn parse(schedule: &str, zone: Option<&str>) -> Result<Schedule, (&'static str, String)> {
        let zone = match zone {
            Some(name) => name.parse::<Tz>().map_err(|_| {
                (
                    "spec.timeZone",
                    format!("{name:?} is not a time zone of the IANA database"),
                )
            })?,
            None => host_zone(),
        };
        let text = schedule.trim();
        if text.starts_with("TZ=") || text.starts_with("CRON_TZ=") {
            return Err((
                "spec.schedule",
                format!(
                    "{schedule:?}: cannot use TZ or CRON_TZ in schedule, use the timeZone field instead"
                ),
            ));
        }
        let text = match text {
            // Kubernetes' parser knows this one too; croner does not.
            "@midnight" => "0 0 * * *",
            t if t.starts_with("@every") => {
                return Err((
                    "spec.schedule",
                    format!(
                        "{schedule:?}: @every is not supported; write the times as cron fields"
                    ),
                ));
            }
            t => t,
        };
        let cron = CronParser::builder()
            .seconds(Seconds::Disallowed)
            .year(Year::Disallowed)
            .build()
            .parse(text)
            .map_err(|e| {
                (
                    "spec.schedule",
                    format!("{schedule:?} is not a valid cron schedule: {e}"),
                )
            })?;
        Ok(Schedule { cron, zone })
    }

    /// The first time after `after` the schedule names.
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.cron
            .find_next_occurrence(&after.with_timezone(&self.zone), false)
            .ok()
            .map(|t| t.with_timezone(&Utc))
    }

    /// The latest time at or before `now` the schedule names.
    pub fn latest_until(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.cron
            .find_previous_occurrence(&now.with_timezone(&self.zone), true)
            .ok()
            .map(|t| t.with_timezone(&Utc))
    }

    /// `time` as RFC 3339 in the schedule's zone (what a job's
    /// scheduled-timestamp annotation says).
    pub fn local_text(&self, time: DateTime<Utc>) -> String {
        time.with_timezone(&self.zone).to_rfc3339()
    }
}

/// The host's time zone: `TZ`, else what /etc/localtime links to, else UTC
/// (as kube-controller-manager reads schedules in its own zone).
fn host_zone() -> Tz {
    if let Ok(name) = std::env::var("TZ")
        && let Ok(zone) = name.trim_start_matches(':').parse()
    {
        return zone;
    }
    std::fs::read_link("/etc/localtime")
        .ok()
        .and_then(|target| {
            let target = target.to_string_lossy().into_owned();
            let (_, name) = target.split_once("zoneinfo/")?;
            name.parse().ok()
        })
        .unwrap_or(Tz::UTC)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .unwrap()
            .with_timezone(&Utc)
    }

    #[test]
    fn five_fields_and_shorthands_name_the_times_cron_does() {
        let every_five = Schedule::parse("*/5 * * * *", Some("UTC")).unwrap();
        assert_eq!(
            every_five.next_after(at("2026-12-06T10:02:30Z")),
            Some(at("2026-12-06T10:05:00Z"))
        );
        assert_eq!(
            every_five.latest_until(at("2026-12-06T10:05:00Z")),
            Some(at("2026-12-06T10:05:00Z"))
        );
        let hourly = Schedule::parse("@hourly", Some("UTC")).unwrap();
        assert_eq!(
            hourly.next_after(at("2026-12-06T10:00:00Z")),
            Some(at("2026-12-06T11:00:00Z"))
        );
        let midnight = Schedule::parse("@midnight", Some("UTC")).unwrap();
        assert_eq!(
            midnight.next_after(at("2026-12-06T10:00:00Z")),
            Some(at("2026-12-07T00:00:00Z"))
        );
        // Day of month or day of week, as cron reads both.
        let either = Schedule::parse("0 0 1 * MON", Some("UTC")).unwrap();
        assert_eq!(
            either.next_after(at("2026-12-02T00:00:00Z")),
            Some(at("2026-12-07T00:00:00Z"))
        );
    }

    #[test]
    fn a_time_zone_moves_the_times() {
        let nine = Schedule::parse("0 9 * * *", Some("Europe/Berlin")).unwrap();
        assert_eq!(
            nine.next_after(at("2026-12-06T00:00:00Z")),
            Some(at("2026-12-06T08:00:00Z"))
        );
        assert_eq!(
            nine.local_text(at("2026-12-06T08:00:00Z")),
            "2026-12-06T09:00:00+01:00"
        );
    }

    #[test]
    fn bad_schedules_and_zones_say_what_is_wrong() {
        let (field, message) = Schedule::parse("61 * * * *", None).unwrap_err();
        assert_eq!(field, "spec.schedule");
        assert!(message.contains("not a valid cron schedule"), "{message}");
        assert!(Schedule::parse("* * * * * *", None).is_err(), "six fields");
        assert!(
            Schedule::parse("TZ=UTC * * * * *", None)
                .unwrap_err()
                .1
                .contains("timeZone field")
        );
        let (field, _) = Schedule::parse("* * * * *", Some("Mars/Olympus")).unwrap_err();
        assert_eq!(field, "spec.timeZone");
    }
}
