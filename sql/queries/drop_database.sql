-- drop_database: drop the database named {database} (a quoted identifier, substituted by
-- db::sql::for_database: DDL takes no parameters), ending its sessions. Used by the demo
-- and the benchmarks for their own databases.
drop database if exists {database} with (force)
