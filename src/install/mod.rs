//! `bundle install` (air-gapped side): one verified streaming pass into staged
//! destinations, committed only after the whole bundle checked out.
