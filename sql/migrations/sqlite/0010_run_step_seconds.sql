-- Where a run's time went: seconds per named step (JSON text, e.g. {"normalize": 1.2,
-- "merge:plan_changes": 0.4}), written by the extract task and completed by the load task from
-- their timings collectors (icr.timings). Additive: one new column on the run log.
ALTER TABLE icr_sync_runs ADD COLUMN step_seconds TEXT;
