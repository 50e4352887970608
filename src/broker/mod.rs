//! The broker: routing and WebSocket chat. Its port (`--broker-port`, 8083)
//! is reserved by `imctl serve`; the broker issue fills this module.
