-- One canonical form of a username everywhere: `Alice` and `alice` are one account.
-- (Fails, and so refuses to start, if two existing users differ only by case.)
CREATE UNIQUE INDEX users_username_nocase ON users(username COLLATE NOCASE);
