//! Metrics through the `metrics` facade.
