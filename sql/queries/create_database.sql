-- create_database: create the database named {database} (a quoted identifier, substituted
-- by db::sql::for_database: DDL takes no parameters).
create database {database}
