//! Recovery of in-doubt transactions by presumed abort: what to do with
//! one prepared transaction (`decide`, pure), one pass over every node
//! (`pass`), and the resolver workers that run passes on their own
//! (`worker`).

pub mod decide;
pub mod pass;
pub mod worker;
