//! arch (under construction).
