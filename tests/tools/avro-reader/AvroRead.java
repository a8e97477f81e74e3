// Reads N values of a topic with Apicurio's AvroKafkaDeserializer in Confluent wire-format mode
// (4-byte schema id = the registry's content id) and prints each as one line of JSON: a Java
// consumer, written by no one here, reading what kstream wrote.
// Usage: java -cp LIBS/* AvroRead.java BOOTSTRAP TOPIC COUNT REGISTRY_URL (the /apis/registry/v2 one)
import java.time.Duration;
import java.util.List;
import java.util.Properties;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;

public class AvroRead {
    public static void main(String[] args) {
        Properties props = new Properties();
        props.put("bootstrap.servers", args[0]);
        props.put("group.id", "avro-read-" + System.nanoTime());
        props.put("auto.offset.reset", "earliest");
        props.put("key.deserializer", "org.apache.kafka.common.serialization.ByteArrayDeserializer");
        props.put("value.deserializer", "io.apicurio.registry.serde.avro.AvroKafkaDeserializer");
        props.put("apicurio.registry.url", args[3]);
        props.put("apicurio.registry.as-confluent", "true");
        props.put("apicurio.registry.use-id", "contentId");
        props.put("apicurio.registry.headers.enabled", "false");
        int wanted = Integer.parseInt(args[2]);
        int seen = 0;
        long deadline = System.currentTimeMillis() + 60_000;
        try (KafkaConsumer<byte[], Object> consumer = new KafkaConsumer<>(props)) {
            consumer.subscribe(List.of(args[1]));
            while (seen < wanted && System.currentTimeMillis() < deadline) {
                for (ConsumerRecord<byte[], Object> rec : consumer.poll(Duration.ofMillis(500))) {
                    System.out.println(rec.value());
                    seen++;
                }
            }
        }
        if (seen < wanted) {
            System.err.println("read " + seen + " of " + wanted + " records within 60 s");
            System.exit(1);
        }
    }
}
