//! jwt-validation (in progress)
