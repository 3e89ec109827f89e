// Used by scripts/services: gives the local broker's secured listeners their users and ACLs,
// through Kafka's own Admin API on the PLAINTEXT listener (whose ANONYMOUS principal is a
// super user of this test broker). Idempotent: credentials are upserted, ACLs re-created.
//
//   java -cp "$KAFKA_HOME/libs/*" scripts/kafka/SecureSetup.java BOOTSTRAP TOPIC_PREFIX \
//        WRITER WRITER_PASSWORD_FILE READER READER_PASSWORD_FILE [EXAMPLE_PREFIX]
//
// WRITER may describe, read and write topics named TOPIC_PREFIX*, but not read those named
// TOPIC_PREFIX + "noread-"*; READER may describe and read TOPIC_PREFIX* (no write); both may
// use consumer groups named kafkasocks* and WRITER has IdempotentWrite on the cluster. Both get
// SCRAM-SHA-256 and SCRAM-SHA-512 credentials. With EXAMPLE_PREFIX, WRITER may also
// describe, read and write topics named EXAMPLE_PREFIX* (the chat example's "chat.").

import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Properties;
import java.util.concurrent.TimeUnit;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.ScramCredentialInfo;
import org.apache.kafka.clients.admin.ScramMechanism;
import org.apache.kafka.clients.admin.UserScramCredentialAlteration;
import org.apache.kafka.clients.admin.UserScramCredentialUpsertion;
import org.apache.kafka.common.acl.AccessControlEntry;
import org.apache.kafka.common.acl.AclBinding;
import org.apache.kafka.common.acl.AclOperation;
import org.apache.kafka.common.acl.AclPermissionType;
import org.apache.kafka.common.resource.PatternType;
import org.apache.kafka.common.resource.ResourcePattern;
import org.apache.kafka.common.resource.ResourceType;

public class SecureSetup {
    public static void main(String[] args) throws Exception {
        if (args.length != 6 && args.length != 7) {
            System.err.println("usage: SecureSetup BOOTSTRAP TOPIC_PREFIX WRITER WRITER_PASSWORD_FILE READER READER_PASSWORD_FILE");
            System.exit(2);
        }
        String bootstrap = args[0], prefix = args[1];
        String writer = args[2], writerPassword = read(args[3]);
        String reader = args[4], readerPassword = read(args[5]);
        Properties props = new Properties();
        props.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        props.put(AdminClientConfig.REQUEST_TIMEOUT_MS_CONFIG, "10000");
        props.put(AdminClientConfig.DEFAULT_API_TIMEOUT_MS_CONFIG, "30000");
        try (Admin admin = Admin.create(props)) {
            // A request may alter each user once: one request per mechanism.
            for (ScramMechanism m : List.of(ScramMechanism.SCRAM_SHA_256, ScramMechanism.SCRAM_SHA_512)) {
                List<UserScramCredentialAlteration> scram = List.of(
                    new UserScramCredentialUpsertion(writer, new ScramCredentialInfo(m, 8192), writerPassword),
                    new UserScramCredentialUpsertion(reader, new ScramCredentialInfo(m, 8192), readerPassword));
                admin.alterUserScramCredentials(scram).all().get(30, TimeUnit.SECONDS);
            }

            ResourcePattern topics = new ResourcePattern(ResourceType.TOPIC, prefix, PatternType.PREFIXED);
            ResourcePattern groups = new ResourcePattern(ResourceType.GROUP, "kafkasocks", PatternType.PREFIXED);
            ResourcePattern cluster = new ResourcePattern(ResourceType.CLUSTER, "kafka-cluster", PatternType.LITERAL);
            List<AclBinding> acls = new ArrayList<>();
            for (AclOperation op : List.of(AclOperation.DESCRIBE, AclOperation.READ, AclOperation.WRITE)) {
                acls.add(allow(topics, writer, op));
            }
            acls.add(allow(cluster, writer, AclOperation.IDEMPOTENT_WRITE));
            ResourcePattern noRead = new ResourcePattern(ResourceType.TOPIC, prefix + "noread-", PatternType.PREFIXED);
            acls.add(new AclBinding(noRead,
                new AccessControlEntry("User:" + writer, "*", AclOperation.READ, AclPermissionType.DENY)));
            acls.add(allow(groups, writer, AclOperation.READ));
            for (AclOperation op : List.of(AclOperation.DESCRIBE, AclOperation.READ)) {
                acls.add(allow(topics, reader, op));
            }
            acls.add(allow(groups, reader, AclOperation.READ));
            if (args.length == 7) {
                ResourcePattern example = new ResourcePattern(ResourceType.TOPIC, args[6], PatternType.PREFIXED);
                for (AclOperation op : List.of(AclOperation.DESCRIBE, AclOperation.READ, AclOperation.WRITE)) {
                    acls.add(allow(example, writer, op));
                }
            }
            admin.createAcls(acls).all().get(30, TimeUnit.SECONDS);
        }
        System.err.println("SecureSetup: users " + writer + " (read, write) and " + reader
            + " (read) on topics " + prefix + "*");
    }

    private static AclBinding allow(ResourcePattern pattern, String user, AclOperation op) {
        return new AclBinding(pattern, new AccessControlEntry("User:" + user, "*", op, AclPermissionType.ALLOW));
    }

    private static String read(String path) throws Exception {
        return Files.readString(Path.of(path), StandardCharsets.UTF_8).strip();
    }
}
