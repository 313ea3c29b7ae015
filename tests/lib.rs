//! Helpers for black-box tests live in the test files themselves.
