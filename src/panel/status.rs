//! Which state the panel announces: the policy from what the appliance knows (the worker,
//! the outboxes, the disk, the latest result) to one [`ApplianceState`] and its reason.
//! Pure: the daemon gathers the facts; this decides; the rest of `panel` draws.

use super::ApplianceState;

/// How long a result stays on the panel as RESULT before the panel says READY again.
pub const RESULT_SHOWN_MS: i64 = 15 * 60_000;

/// What the appliance knows now.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Facts {
    /// The models could not be loaded (why).
    pub models_error: Option<String>,
    /// The database could not be read (why).
    pub database_error: Option<String>,
    /// A study is being analysed.
    pub analysing: bool,
    /// Series still collecting instances (their quiet period has not passed).
    pub series_collecting: i64,
    /// Alerts given up on.
    pub alerts_dead: i64,
    /// Result objects for PACS given up on.
    pub exports_dead: i64,
    /// Free bytes on the state directory's file system.
    pub disk_free_bytes: u64,
    /// The receiver's floor (`receiver.min_free_bytes`): under twice this the disk is
    /// nearly full.
    pub min_free_bytes: u64,
    /// How long ago the latest result was recorded.
    pub last_result_age_ms: Option<i64>,
}

impl Facts {
    /// The state and the reason shown under it. In order: ERROR when the models or the
    /// database are unusable, ANALYSING, RECEIVING while a series collects, DEGRADED when
    /// alerts or result objects were given up on or the disk is nearly full, RESULT for
    /// [`RESULT_SHOWN_MS`] after a result, else READY.
    pub fn appliance_state(&self) -> (ApplianceState, Option<String>) {
        let low_disk = self.disk_free_bytes < self.min_free_bytes.saturating_mul(2);
        if let Some(e) = &self.models_error {
            (ApplianceState::Error, Some(format!("models: {e}")))
        } else if let Some(e) = &self.database_error {
            (ApplianceState::Error, Some(format!("database: {e}")))
        } else if self.analysing {
            (ApplianceState::Analysing, None)
        } else if self.series_collecting > 0 {
            (ApplianceState::Receiving, None)
        } else if low_disk {
            (ApplianceState::Degraded, Some("disk nearly full".into()))
        } else if self.alerts_dead > 0 {
            let why = format!(
                "{} alert(s) undelivered: see `onfh-edge results`",
                self.alerts_dead
            );
            (ApplianceState::Degraded, Some(why))
        } else if self.exports_dead > 0 {
            let why = format!(
                "{} result object(s) not stored in PACS: see `onfh-edge export list`",
                self.exports_dead
            );
            (ApplianceState::Degraded, Some(why))
        } else if self
            .last_result_age_ms
            .is_some_and(|age| age < RESULT_SHOWN_MS)
        {
            (ApplianceState::Result, None)
        } else {
            (ApplianceState::Ready, None)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn idle() -> Facts {
        Facts {
            disk_free_bytes: 10 << 30,
            min_free_bytes: 1 << 30,
            ..Default::default()
        }
    }

    #[test]
    fn each_fact_gives_its_state_in_order() {
        assert_eq!(idle().appliance_state(), (ApplianceState::Ready, None));
        let recent = Facts {
            last_result_age_ms: Some(60_000),
            ..idle()
        };
        assert_eq!(recent.appliance_state().0, ApplianceState::Result);
        let old = Facts {
            last_result_age_ms: Some(RESULT_SHOWN_MS),
            ..idle()
        };
        assert_eq!(old.appliance_state().0, ApplianceState::Ready);
        let dead = Facts {
            exports_dead: 2,
            ..recent.clone()
        };
        let (s, why) = dead.appliance_state();
        assert_eq!(s, ApplianceState::Degraded);
        assert!(why.unwrap().contains("2 result object(s)"));
        let full = Facts {
            disk_free_bytes: 1 << 30,
            alerts_dead: 1,
            ..idle()
        };
        assert_eq!(
            full.appliance_state(),
            (ApplianceState::Degraded, Some("disk nearly full".into()))
        );
        let receiving = Facts {
            series_collecting: 1,
            ..full
        };
        assert_eq!(receiving.appliance_state().0, ApplianceState::Receiving);
        let analysing = Facts {
            analysing: true,
            ..receiving
        };
        assert_eq!(analysing.appliance_state().0, ApplianceState::Analysing);
        let broken = Facts {
            database_error: Some("disk I/O error".into()),
            ..analysing
        };
        assert_eq!(
            broken.appliance_state(),
            (
                ApplianceState::Error,
                Some("database: disk I/O error".into())
            )
        );
        let no_models = Facts {
            models_error: Some("missing".into()),
            ..broken
        };
        assert_eq!(no_models.appliance_state().1.unwrap(), "models: missing");
    }
}
