pub mod ship;
