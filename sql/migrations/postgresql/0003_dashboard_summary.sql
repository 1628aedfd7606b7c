-- The dashboard summary, materialized so BI tools read it cheaply. Refreshed by the DAG
-- icr_reporting_refresh whenever the sync publishes its Asset.
CREATE MATERIALIZED VIEW icr_report_dashboard_summary AS
SELECT snapshot_date, compared_to, active, new, removed FROM icr_report_daily_counts
WITH NO DATA;
CREATE UNIQUE INDEX icr_report_dashboard_summary_date_idx ON icr_report_dashboard_summary (snapshot_date);
