//! Tools around the mesh: the local stack (`stack`), the flash-sale simulator (`flashsale`),
//! and [`testenv`], the isolated backing-service environment every integration test uses.
#![forbid(unsafe_code)]

pub mod testenv;
