-- DPoP (RFC 9449): the thumbprint of the key a session's refresh family is bound to.
ALTER TABLE sessions ADD COLUMN dpop_jkt TEXT;
