-- One database per service: no service reads another's tables.
CREATE DATABASE auth;
CREATE DATABASE products;
CREATE DATABASE inventory;
CREATE DATABASE orders;
