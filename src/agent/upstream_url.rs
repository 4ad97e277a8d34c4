//! Upstream address normalization (`8080` → `http://localhost:8080`).
