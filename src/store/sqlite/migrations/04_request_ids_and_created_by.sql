-- Every audit event carries the x-request-id of the request that caused it.
ALTER TABLE audit_events ADD COLUMN request_id TEXT;
CREATE INDEX audit_by_request ON audit_events(request_id) WHERE request_id IS NOT NULL;
-- Writers list every document of their tenant, newest first.
CREATE INDEX documents_by_tenant ON documents(tenant, created_at);
